//! Integration tests for `FaultProxy` in front of a real redis-server.

mod common;

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{
    client_with_timeout, get_directly, info_field, set_directly, setup, Raw, QUIET, SOON,
};
use leasehold_testkit::{poll_until_async, FaultProxy, Match, Rule, Verdict};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_passes_commands_and_replies() {
    let (server, proxy) = setup().await;
    let mut con = client_with_timeout(&proxy.url(), SOON).await;

    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(value, "v");
    assert_eq!(get_directly(&server, "k").as_deref(), Some("v"));

    // A value far larger than one read, and a long pipeline: frames split
    // across reads and many frames per read.
    let big = "x".repeat(3 << 20);
    let () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query_async(&mut con)
        .await
        .unwrap();
    let echoed: String = redis::cmd("GET")
        .arg("big")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(echoed.len(), big.len());
    let mut pipe = redis::pipe();
    for _ in 0..500 {
        pipe.cmd("INCR").arg("counter");
    }
    let counts: Vec<u64> = pipe.query_async(&mut con).await.unwrap();
    assert_eq!(counts, (1..=500).collect::<Vec<u64>>());

    assert!(proxy.commands_seen() >= 504, "{}", proxy.commands_seen());
    assert_eq!(proxy.connections_accepted(), 1);
    assert_eq!(proxy.active_connections(), 1);
    assert_eq!(proxy.replies_dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_pass_through_and_can_be_matched() {
    let (_server, proxy) = setup().await;
    let rule = proxy.add_rule(Rule::reply_to(Match::command("ping")).first(1).drop());
    let mut raw = Raw::connect(proxy.addr()).await;
    raw.send_bytes(b"PING first\r\nPING\r\n").await;
    raw.expect(b"+PONG\r\n", SOON).await;
    raw.expect_silence(QUIET).await;
    assert_eq!(rule.hits(), 1);
    assert_eq!(proxy.replies_dropped(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_reply_command_still_reaches_the_server() {
    let (server, proxy) = setup().await;
    let rule = proxy.add_rule(Rule::reply_to(Match::command("SET")).first(1).drop());
    let mut con = client_with_timeout(&proxy.url(), Duration::from_millis(300)).await;

    let error = redis::cmd("SET")
        .arg("lock")
        .arg("token")
        .query_async::<()>(&mut con)
        .await
        .unwrap_err();

    assert!(error.is_timeout(), "expected a timeout, got {error}");
    assert_eq!(get_directly(&server, "lock").as_deref(), Some("token"));
    assert_eq!(rule.hits(), 1);
    assert_eq!(proxy.replies_dropped(), 1);
    assert_eq!(
        proxy.active_connections(),
        1,
        "a dropped reply keeps the connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_reply_arrives_late_and_in_order() {
    let (server, proxy) = setup().await;
    set_directly(&server, "a", "1");
    let delay = Duration::from_millis(400);
    let rule = proxy.add_rule(Rule::reply_to(Match::command("GET")).first(1).delay(delay));
    let mut raw = Raw::connect(proxy.addr()).await;

    let sent = Instant::now();
    raw.send(&[&["GET", "a"], &["PING"]]).await;
    // Both replies, the PONG queued behind the delayed GET reply.
    raw.expect(b"$1\r\n1\r\n+PONG\r\n", SOON).await;
    let elapsed = sent.elapsed();
    assert!(
        elapsed >= delay,
        "replies arrived after {elapsed:?}, before the {delay:?} delay"
    );
    assert!(elapsed < SOON);
    assert_eq!(rule.hits(), 1);

    // A client whose timeout exceeds the delay still gets the value.
    let slow = proxy.add_rule(Rule::reply_to(Match::command("GET")).first(1).delay(delay));
    let mut con = client_with_timeout(&proxy.url(), SOON).await;
    let start = Instant::now();
    let value: String = redis::cmd("GET")
        .arg("a")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(value, "1");
    assert!(start.elapsed() >= delay);
    assert_eq!(slow.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_verdict_closes_the_connection_after_delivery() {
    let (server, proxy) = setup().await;
    let rule = proxy.add_rule(Rule::reply_to(Match::command("SET")).reset());
    let mut raw = Raw::connect(proxy.addr()).await;

    raw.send(&[&["SET", "k", "delivered"]]).await;
    raw.expect_reset(SOON).await;

    assert_eq!(get_directly(&server, "k").as_deref(), Some("delivered"));
    assert_eq!(rule.hits(), 1);
    assert!(poll_until_async(SOON, || async { proxy.active_connections() == 0 }).await);
    // The upstream side is closed too: only our direct connection remains.
    assert!(
        poll_until_async(SOON, || async {
            info_field(&server, "clients", "connected_clients") == 1
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_applies_only_to_first_n_matches() {
    let (server, proxy) = setup().await;
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
        set_directly(&server, key, value);
    }
    let rule = proxy.add_rule(Rule::reply_to(Match::command("GET")).first(2).drop());
    let mut raw = Raw::connect(proxy.addr()).await;

    raw.send(&[&["GET", "a"], &["GET", "b"], &["GET", "c"], &["GET", "a"]])
        .await;

    raw.expect(b"$1\r\n3\r\n$1\r\n1\r\n", SOON).await;
    raw.expect_silence(QUIET).await;
    assert_eq!(rule.hits(), 2);
    assert_eq!(proxy.replies_dropped(), 2);
    assert_eq!(rule.rule().verdict, Verdict::Drop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_matching_rule_claims_the_command() {
    let (_server, proxy) = setup().await;
    let shield = proxy
        .add_rule(Rule::reply_to(Match::command("ECHO").and(Match::arg_contains("safe"))).pass());
    let dropper = proxy.add_rule(Rule::reply_to(Match::command("ECHO")).drop());
    let mut raw = Raw::connect(proxy.addr()).await;

    raw.send(&[&["ECHO", "lost"], &["ECHO", "safe"]]).await;
    raw.expect(b"$4\r\nsafe\r\n", SOON).await;
    raw.expect_silence(QUIET).await;
    assert_eq!((shield.hits(), dropper.hits()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_is_removed_when_its_guard_is_dropped() {
    let (_server, proxy) = setup().await;
    let rule = proxy.add_rule(Rule::reply_to(Match::command("PING")).drop());
    let mut raw = Raw::connect(proxy.addr()).await;
    raw.send(&[&["PING"]]).await;
    raw.expect_silence(QUIET).await;

    drop(rule);
    raw.send(&[&["PING"]]).await;
    raw.expect(b"+PONG\r\n", SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_blocks_both_directions_until_guard_dropped() {
    let (server, proxy) = setup().await;
    let mut writer = Raw::connect(proxy.addr()).await;
    writer.send(&[&["PING"]]).await;
    writer.expect(b"+PONG\r\n", SOON).await;
    // A blocked BLPOP whose reply the server will produce during the stall.
    let mut waiter = Raw::connect(proxy.addr()).await;
    waiter.send(&[&["BLPOP", "list", "30"]]).await;
    assert!(
        poll_until_async(SOON, || async {
            info_field(&server, "clients", "blocked_clients") == 1
        })
        .await
    );

    let stall = proxy.stall();
    writer.send(&[&["SET", "stalled", "v"]]).await;
    let mut newcomer = Raw::connect(proxy.addr()).await;
    newcomer.send(&[&["PING"]]).await;
    let pushed: u64 = redis::cmd("RPUSH")
        .arg("list")
        .arg("x")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(pushed, 1);

    writer.expect_silence(QUIET).await;
    waiter.expect_silence(Duration::from_millis(50)).await;
    newcomer.expect_silence(Duration::from_millis(50)).await;
    // Client → server held: the SET has not reached the server.
    assert_eq!(get_directly(&server, "stalled"), None);
    // Server → client held: the BLPOP was served, but its reply not delivered.
    let len: u64 = redis::cmd("LLEN")
        .arg("list")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(len, 0);

    drop(stall);
    writer.expect(b"+OK\r\n", SOON).await;
    waiter
        .expect(b"*2\r\n$4\r\nlist\r\n$1\r\nx\r\n", SOON)
        .await;
    newcomer.expect(b"+PONG\r\n", SOON).await;
    assert_eq!(get_directly(&server, "stalled").as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_all_drops_existing_connections() {
    let (server, proxy) = setup().await;
    let mut first = Raw::connect(proxy.addr()).await;
    let mut second = Raw::connect(proxy.addr()).await;
    for raw in [&mut first, &mut second] {
        raw.send(&[&["PING"]]).await;
        raw.expect(b"+PONG\r\n", SOON).await;
    }
    assert_eq!(proxy.active_connections(), 2);

    proxy.reset_all();

    first.expect_reset(SOON).await;
    second.expect_reset(SOON).await;
    assert!(poll_until_async(SOON, || async { proxy.active_connections() == 0 }).await);
    assert!(
        poll_until_async(SOON, || async {
            info_field(&server, "clients", "connected_clients") == 1
        })
        .await,
        "upstream connections were not closed"
    );
    let mut third = Raw::connect(proxy.addr()).await;
    third.send(&[&["PING"]]).await;
    third.expect(b"+PONG\r\n", SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_connection_is_not_desynchronised_by_rules() {
    let (server, proxy) = setup().await;
    let rule = proxy.add_rule(Rule::reply_to(Match::command("PING")).drop());
    let mut subscriber = Raw::connect(proxy.addr()).await;
    subscriber.send(&[&["SUBSCRIBE", "ch"]]).await;
    subscriber
        .expect(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", SOON)
        .await;

    // The message is queued for the subscriber before its PING is read, so a
    // proxy pairing replies with commands would drop the message instead.
    let receivers: u64 = redis::cmd("PUBLISH")
        .arg("ch")
        .arg("hello")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(receivers, 1);
    subscriber.send(&[&["PING"]]).await;
    subscriber
        .expect(
            b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n",
            SOON,
        )
        .await;
    assert_eq!(rule.hits(), 0, "rules must not claim pub/sub commands");

    // Other connections are still subject to the rule.
    let mut plain = Raw::connect(proxy.addr()).await;
    plain.send(&[&["PING"]]).await;
    plain.expect_silence(QUIET).await;
    assert_eq!(rule.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_pubsub_messages_never_arrive_and_the_next_ones_do() {
    let (server, proxy) = setup().await;
    let mut subscriber = Raw::connect(proxy.addr()).await;
    subscriber.send(&[&["SUBSCRIBE", "ch"]]).await;
    subscriber
        .expect(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", SOON)
        .await;
    proxy.drop_messages(2);
    let mut publisher = server.connection();
    for payload in ["one", "two", "three"] {
        let receivers: u64 = redis::cmd("PUBLISH")
            .arg("ch")
            .arg(payload)
            .query(&mut publisher)
            .unwrap();
        assert_eq!(receivers, 1);
    }
    // The replies to the subscriber's own commands still pass.
    subscriber.send(&[&["PING"]]).await;
    subscriber
        .expect(
            b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nthree\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n",
            SOON,
        )
        .await;
    assert_eq!(proxy.messages_dropped(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_upstream_is_refused() {
    for upstream in [
        "10.1.2.3:6379",
        "192.168.0.1:6379",
        "[2001:db8::1]:6379",
        "[::ffff:8.8.8.8]:6379",
    ] {
        let upstream: SocketAddr = upstream.parse().unwrap();
        let error = FaultProxy::start(upstream).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{upstream}");
    }
    for upstream in ["127.0.0.1:6379", "[::1]:6379", "[::ffff:127.0.0.1]:6379"] {
        let proxy = FaultProxy::start(upstream.parse().unwrap()).await.unwrap();
        assert!(proxy.addr().ip().is_loopback());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_new_connections_are_reset_while_existing_ones_work() {
    let (_server, proxy) = setup().await;
    let mut existing = Raw::connect(proxy.addr()).await;
    // Make sure the proxy has accepted it before refusing.
    existing.send(&[&["PING"]]).await;
    existing.expect(b"+PONG\r\n", SOON).await;
    proxy.set_refuse_new(true);
    Raw::expect_refused(proxy.addr()).await;
    assert_eq!(proxy.connections_refused(), 1);
    existing.send(&[&["PING"]]).await;
    existing.expect(b"+PONG\r\n", SOON).await;

    proxy.set_refuse_new(false);
    let mut accepted = Raw::connect(proxy.addr()).await;
    accepted.send(&[&["PING"]]).await;
    accepted.expect(b"+PONG\r\n", SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_proxy_closes_its_connections_and_listener() {
    let (_server, proxy) = setup().await;
    let addr = proxy.addr();
    let mut raw = Raw::connect(addr).await;
    raw.send(&[&["PING"]]).await;
    raw.expect(b"+PONG\r\n", SOON).await;

    drop(proxy);

    assert!(matches!(raw.next_read(SOON).await, Ok(0) | Err(_)));
    assert!(
        poll_until_async(SOON, || async {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await,
        "the proxy still accepts connections after drop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_closes_proxied_connections_and_new_ones_reach_it() {
    let (mut server, proxy) = setup().await;
    let mut old = Raw::connect(proxy.addr()).await;
    old.send(&[&["PING"]]).await;
    old.expect(b"+PONG\r\n", SOON).await;

    server.restart();

    assert!(matches!(old.next_read(SOON).await, Ok(0) | Err(_)));
    let mut con = client_with_timeout(&proxy.url(), SOON).await;
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
}
