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
    // A plain port never answers a TLS hello: typed, and the message says what to check.
    let err = c.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls(TlsProblem::NotTls), "{err}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_over_tls_reaches_the_sentinels_and_the_master_they_name_with_one_config() {
    let pki = TestPki::generate();
    let group = leasehold_testkit::SentinelGroup::start_tls(pki.listener(ServerCert::Good, false));
    let sentinels: Vec<String> = group.sentinels().iter().map(RedisServer::tls_url).collect();
    let c = Client::sentinel_builder(sentinels, group.master_name())
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .tls(TlsConfig::new().ca_file(pki.ca()))
        .build()
        .unwrap();
    let guard = c.lock("tls/sentinel").unwrap().acquire().await.unwrap();
    // The grant is on the master, which the sentinels named by its TLS port.
    let mut con = group.master().async_connection().await;
    let exists: bool = redis::cmd("EXISTS")
        .arg("leasehold:{tls/sentinel}")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(exists);
    assert!(guard.release().await.unwrap().is_released());
    // Without the CA, the sentinels themselves refuse the handshake.
    let untrusting = Client::sentinel_builder(
        group.sentinels().iter().map(RedisServer::tls_url),
        group.master_name(),
    )
    .tls(TlsConfig::new().ca_file(pki.other_ca()))
    .build()
    .unwrap();
    let err = untrusting.ping().await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Tls(TlsProblem::UnknownAuthority),
        "{err}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_routes_to_every_primary_with_the_settings_applied_to_each() {
    let pki = TestPki::generate();
    let cluster =
        leasehold_testkit::RedisCluster::start_tls(3, pki.listener(ServerCert::Good, false));
    let c = Client::cluster_builder(cluster.tls_urls())
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .tls(TlsConfig::new().ca_file(pki.ca()))
        .build()
        .unwrap();
    // Enough names to land on every primary; each grant reaches its node over TLS.
    let mut guards = Vec::new();
    for i in 0..12 {
        guards.push(
            c.lock(&format!("tls/c{i}"))
                .unwrap()
                .acquire()
                .await
                .unwrap(),
        );
    }
    let held = c.list("tls/*", leasehold::LIST_LIMIT).await.unwrap();
    assert_eq!(held.entries.len(), 12, "{held:?}");
    for g in guards {
        assert!(g.release().await.unwrap().is_released());
    }
    c.shutdown().await;
}

/// A byte-level loopback proxy for TLS traffic (the fault proxy reads RESP, which TLS
/// hides): it pipes both ways, and once armed, swallows the next reply the server sends
/// after a client write and closes that connection — a reply lost after the command ran.
struct LoseNextReply {
    addr: std::net::SocketAddr,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    lost: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl LoseNextReply {
    async fn start(upstream: u16) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicU64::new(0));
        let (a, l) = (armed.clone(), lost.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                    .await
                    .unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let wrote = Arc::new(AtomicBool::new(false));
                let (armed, lost, wrote2) = (a.clone(), l.clone(), wrote.clone());
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        // Before forwarding: the reply may come back before this task
                        // runs again.
                        wrote2.store(true, Ordering::SeqCst);
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if wrote.swap(false, Ordering::SeqCst)
                            && armed.swap(false, Ordering::SeqCst)
                        {
                            // The command ran; its reply never arrives.
                            lost.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                });
            }
        });
        LoseNextReply {
            addr,
            armed,
            lost,
            task,
        }
    }
}

impl Drop for LoseNextReply {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_004_over_tls_a_lost_reply_to_acquire_still_grants_exactly_once() {
    use std::sync::atomic::Ordering;
    let pki = TestPki::generate();
    let server = tls_server(&pki, ServerCert::Good, false);
    let proxy = LoseNextReply::start(server.tls_port().unwrap()).await;
    let c = client(
        &format!("rediss://{}/", proxy.addr),
        TlsConfig::new().ca_file(pki.ca()),
    );
    let lock = c
        .lock("seed004/tls")
        .unwrap()
        .ttl(Duration::from_secs(30))
        .auto_renew(false);
    // Connect, load the scripts and settle the connection first.
    lock.try_acquire().await.unwrap().release().await.unwrap();
    c.ping().await.unwrap();

    proxy.armed.store(true, Ordering::SeqCst);
    let guard = lock
        .try_acquire()
        .await
        .expect("granted despite the lost reply");
    assert_eq!(proxy.lost.load(Ordering::SeqCst), 1, "the reply was lost");
    assert_eq!(guard.hold_count(), 1);
    let mut con = server.async_connection().await;
    let count: String = redis::cmd("HGET")
        .arg("leasehold:{seed004/tls}")
        .arg("count")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(count, "1", "the retry was counted as a second hold");
    // The holder is who the server says: releasing frees the lock.
    assert!(guard.release().await.unwrap().is_released());
    let exists: bool = redis::cmd("EXISTS")
        .arg("leasehold:{seed004/tls}")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(!exists);
    c.shutdown().await;
}
