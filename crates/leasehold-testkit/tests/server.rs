//! Integration tests for `RedisServer`: real redis-server processes.

use std::{io, net::TcpStream, time::Duration};

use leasehold_testkit::{poll_until, RedisServer};
use nix::{sys::signal::kill, unistd::Pid};

const SOON: Duration = Duration::from_secs(5);

fn process_exists(pid: u32) -> bool {
    // Signal 0 checks existence; a zombie still exists, so this is false only
    // once the process was reaped.
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), None).is_ok()
}

fn ping(con: &mut redis::Connection) -> redis::RedisResult<String> {
    redis::cmd("PING").query(con)
}

#[test]
fn server_starts_answers_and_is_reaped_on_drop() {
    let server = RedisServer::start();
    let pid = server.pid();
    let dir = server.dir().to_path_buf();
    assert!(process_exists(pid));
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    assert_eq!(ping(&mut server.connection()).unwrap(), "PONG");
    assert!(server.log().contains("Ready to accept connections"));

    drop(server);
    assert!(
        poll_until(SOON, || !process_exists(pid)),
        "redis-server {pid} still exists (or is a zombie) after drop"
    );
    assert!(!dir.exists(), "temporary directory {dir:?} was not removed");
}

#[tokio::test]
async fn async_connection_answers() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg("k")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(value, "v");
}

#[test]
fn restart_keeps_the_same_port_and_loses_data() {
    let mut server = RedisServer::start();
    let (port, old_pid) = (server.port(), server.pid());
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut server.connection())
        .unwrap();

    server.restart();

    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), old_pid);
    assert!(poll_until(SOON, || !process_exists(old_pid)));
    assert!(server.is_running());
    let value: Option<String> = redis::cmd("GET")
        .arg("k")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(value, None);
}

#[test]
fn stop_is_idempotent_and_a_stopped_server_can_be_restarted() {
    let mut server = RedisServer::start();
    let pid = server.pid();
    server.stop();
    server.stop();
    assert!(!server.is_running());
    assert!(!process_exists(pid));
    assert!(
        poll_until(SOON, || TcpStream::connect(server.addr()).is_err()),
        "port {} still accepts connections after stop",
        server.port()
    );

    server.restart();
    assert_eq!(ping(&mut server.connection()).unwrap(), "PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_does_not_answer_until_resumed() {
    let server = RedisServer::start();
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_millis(200)));
    let client = server.client();
    let mut con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();

    let pause = server.pause();
    let error = redis::cmd("PING")
        .query_async::<String>(&mut con)
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "expected a timeout, got {error}");

    pause.resume();
    let mut fresh = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut fresh).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn paused_server_is_still_killed_and_reaped_on_drop() {
    let server = RedisServer::start();
    let pid = server.pid();
    let pause = server.pause();
    std::mem::forget(pause); // never resumed
    drop(server);
    assert!(poll_until(SOON, || !process_exists(pid)));
}

#[test]
fn requirepass_url_authenticates() {
    let password = "s3cr:t @/pw";
    let server = RedisServer::builder().requirepass(password).start();
    assert_eq!(server.password(), Some(password));
    assert!(server.url().contains('@'));

    assert_eq!(ping(&mut server.connection()).unwrap(), "PONG");

    let mut anonymous = redis::Client::open(server.url_without_auth())
        .unwrap()
        .get_connection()
        .unwrap();
    let error = ping(&mut anonymous).unwrap_err();
    assert!(error.to_string().contains("NOAUTH"), "{error}");
}

#[test]
fn acl_user_url_authenticates_as_that_user() {
    let server = RedisServer::builder()
        .acl_user("alice", "wonder land")
        .start();
    assert_eq!(server.username(), Some("alice"));
    assert!(server.url().starts_with("redis://alice:"));
    let whoami: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(whoami, "alice");
}

#[test]
fn extra_args_reach_the_server_config() {
    let server = RedisServer::builder()
        .args(["--maxmemory", "1mb"])
        .arg("--maxmemory-policy")
        .arg("noeviction")
        .start();
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory*")
        .query(&mut server.connection())
        .unwrap();
    let pairs: Vec<_> = config
        .chunks(2)
        .map(|pair| (&pair[0][..], &pair[1][..]))
        .collect();
    assert!(pairs.contains(&("maxmemory", "1048576")), "{pairs:?}");
    assert!(
        pairs.contains(&("maxmemory-policy", "noeviction")),
        "{pairs:?}"
    );
}

#[test]
fn bad_config_fails_with_the_server_output_in_the_error() {
    let error = RedisServer::builder()
        .args(["--no-such-directive", "1"])
        .try_start()
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("Bad directive"), "{message}");
}

#[test]
fn missing_binary_error_says_how_to_install_redis() {
    let error = RedisServer::builder()
        .binary("/nonexistent/redis-server")
        .try_start()
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    let message = error.to_string();
    assert!(
        message.contains("apt-get install -y redis-server"),
        "{message}"
    );
    assert!(message.contains("LEASEHOLD_REDIS_SERVER"), "{message}");
}
