//! TLS against real redis-server TLS listeners with certificates made per test: a private
//! CA, mutual TLS, and each certificate a client must refuse, reported as what it is.

use std::time::Duration;

use leasehold::{Client, ErrorKind, TlsConfig, TlsProblem};
use leasehold_testkit::{Masters, RedisServer, ServerCert, TestPki};

fn tls_server(pki: &TestPki, cert: ServerCert, require_client_cert: bool) -> RedisServer {
    RedisServer::builder()
        .tls(pki.listener(cert, require_client_cert))
        .start()
}

fn client(url: &str, tls: TlsConfig) -> Client {
    Client::builder(url)
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .tls(tls)
        .build()
        .expect("client")
}

async fn tls_problem(client: &Client) -> Option<TlsProblem> {
    let err = client.ping().await.expect_err("the handshake must fail");
    match err.kind() {
        ErrorKind::Tls(problem) => {
            assert!(err.to_string().contains("TLS"), "{err}");
            Some(problem)
        }
        other => panic!("expected a TLS error, got {other:?}: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_given_as_a_file_is_trusted_and_locks_work_over_tls() {
    let pki = TestPki::generate();
    let server = tls_server(&pki, ServerCert::Good, false);
    let c = client(&server.tls_url(), TlsConfig::new().ca_file(pki.ca()));
    let lock = c.lock("tls/basics").unwrap();
    let guard = lock.acquire().await.unwrap();
    let token = guard.fencing_token();
    let info = c.inspect("tls/basics").await.unwrap();
    assert_eq!(info.holder.expect("held").fencing_token, token);
    assert!(guard.release().await.unwrap().is_released());
    // A redis:// URL with TLS settings is reached over TLS too (redis-cli's --tls).
    let plain_scheme = server.tls_url().replacen("rediss://", "redis://", 1);
    let c2 = client(
        &plain_scheme,
        TlsConfig::new().ca_pem(std::fs::read(pki.ca()).unwrap()),
    );
    c2.ping().await.unwrap();
    c.shutdown().await;
    c2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_server_certificate_is_refused_as_the_problem_it_is() {
    let pki = TestPki::generate();
    let trusting = || TlsConfig::new().ca_file(pki.ca());
    let cases = [
        (ServerCert::UnknownCa, TlsProblem::UnknownAuthority),
        (ServerCert::WrongName, TlsProblem::NameMismatch),
        (ServerCert::Expired, TlsProblem::Expired),
    ];
    for (cert, expected) in cases {
        let server = tls_server(&pki, cert, false);
        let c = client(&server.tls_url(), trusting());
        assert_eq!(tls_problem(&c).await, Some(expected), "{cert:?}");
        // A lock call fails the same way, and nothing reached the server.
        let err = c
            .lock("tls/refused")
            .unwrap()
            .try_acquire()
            .await
            .unwrap_err();
        assert!(err.is_tls(), "{cert:?}: {err}");
        c.shutdown().await;
    }
    // Trusting only another CA: the good certificate's issuer is unknown.
    let server = tls_server(&pki, ServerCert::Good, false);
    let c = client(&server.tls_url(), TlsConfig::new().ca_file(pki.other_ca()));
    assert_eq!(tls_problem(&c).await, Some(TlsProblem::UnknownAuthority));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_its_certificate_and_admits_one_with_it() {
    let pki = TestPki::generate();
    let server = tls_server(&pki, ServerCert::Good, true);
    let without = client(&server.tls_url(), TlsConfig::new().ca_file(pki.ca()));
    assert_eq!(
        tls_problem(&without).await,
        Some(TlsProblem::ClientCertificateRequired)
    );
    let (cert, key) = pki.client();
    let with = client(
        &server.tls_url(),
        TlsConfig::new()
            .ca_file(pki.ca())
            .client_cert_files(cert, key),
    );
    let guard = with.lock("tls/mtls").unwrap().acquire().await.unwrap();
    assert!(guard.release().await.unwrap().is_released());
    without.shutdown().await;
    with.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_mode_accepts_certificates_that_fail_every_check() {
    let pki = TestPki::generate();
    for cert in [
        ServerCert::UnknownCa,
        ServerCert::Expired,
        ServerCert::WrongName,
    ] {
        let server = tls_server(&pki, cert, false);
        let c = client(&server.tls_url(), TlsConfig::new().insecure(true));
        c.ping().await.unwrap_or_else(|e| panic!("{cert:?}: {e}"));
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_port_without_tls_is_reported_as_such_and_a_rediss_url_never_panics() {
    let pki = TestPki::generate();
    let server = tls_server(&pki, ServerCert::Good, false);
    let plain_port = server.url().replacen("redis://", "rediss://", 1);
    let c = client(&plain_port, TlsConfig::new().ca_file(pki.ca()));
    // A plain port never answers a TLS hello: the error says what to check.
    let err = c.ping().await.unwrap_err();
    assert!(err.is_connection(), "{err}");
    assert!(err.to_string().contains("is that a TLS port?"), "{err}");
    c.shutdown().await;
    // No TLS settings at all: the platform's store does not know the test CA. The point
    // is an error, not a panic about a missing crypto provider.
    let bare = Client::builder(server.tls_url()).build().unwrap();
    let err = bare.ping().await.unwrap_err();
    assert!(err.is_tls() || err.is_connection(), "{err}");
    bare.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_are_invalid_input_at_build() {
    let pki = TestPki::generate();
    let missing = pki.dir().join("no-such.crt");
    let err = Client::builder("rediss://127.0.0.1:9/")
        .tls(TlsConfig::new().ca_file(&missing))
        .build()
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(err.to_string().contains("no-such.crt"), "{err}");
    let err = Client::builder("rediss://127.0.0.1:9/")
        .tls(TlsConfig::new().ca_pem(b"not a certificate".to_vec()))
        .build()
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    let (cert, _) = pki.client();
    let err = Client::builder("rediss://127.0.0.1:9/")
        .tls(TlsConfig::new().client_cert_files(&cert, &cert))
        .build()
        .unwrap_err();
    assert!(
        err.is_invalid_input(),
        "a certificate given as the key: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_over_tls_applies_the_settings_to_every_node() {
    let pki = TestPki::generate();
    let nodes = Masters::start_with(
        3,
        &RedisServer::builder().tls(pki.listener(ServerCert::Good, false)),
    );
    let urls: Vec<String> = nodes.servers().iter().map(RedisServer::tls_url).collect();
    let c = Client::redlock_builder(urls)
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .tls(TlsConfig::new().ca_file(pki.ca()))
        .build()
        .unwrap();
    let guard = c.lock("tls/redlock").unwrap().acquire().await.unwrap();
    assert!(guard.release().await.unwrap().is_released());
    c.shutdown().await;
}
