//! Integration tests for command holds (`Rule::command_to(..).delay(..)`):
//! a command that is still in the network when its client gives up on it.

mod common;

use std::time::{Duration, Instant};

use common::{client_with_timeout, get_directly, info_field, setup, Raw, SOON};
use leasehold_testkit::{
    poll_until_async, FaultProxy, Match, RedisServer, Rule, RuleGuard, Verdict,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_command_reaches_the_server_late_and_in_order() {
    let (server, proxy) = setup().await;
    let hold = Duration::from_millis(300);
    let rule = proxy.add_rule(Rule::command_to(Match::command("SET")).first(1).delay(hold));
    assert_eq!(rule.rule().verdict, Verdict::HoldCommand(hold));
    let mut con = client_with_timeout(&proxy.url(), Duration::from_millis(100)).await;

    let sent = Instant::now();
    let error = redis::cmd("SET")
        .arg("k")
        .arg("first")
        .query_async::<()>(&mut con)
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "expected a timeout, got {error}");

    // A later command on the same connection, sent while the SET is held.
    let seen = proxy.commands_seen();
    let mut patient = con.clone();
    patient.set_response_timeout(SOON);
    let append = tokio::spawn(async move {
        redis::cmd("APPEND")
            .arg("k")
            .arg("+second")
            .query_async::<usize>(&mut patient)
            .await
    });
    assert!(poll_until_async(SOON, || async { proxy.commands_seen() > seen }).await);
    let early = get_directly(&server, "k");
    let checked = sent.elapsed();
    assert!(
        checked < hold,
        "checked after {checked:?}, too late to tell"
    );
    assert_eq!(early, None, "a command reached the server during the hold");

    assert!(poll_until_async(SOON, || async { get_directly(&server, "k").is_some() }).await);
    let arrived = sent.elapsed();
    assert!(
        arrived >= hold,
        "the SET was applied after {arrived:?}, before its {hold:?} hold ended"
    );
    // The APPEND ran after the SET: it got its own reply, and its suffix.
    let len = append.await.unwrap().unwrap();
    assert_eq!(len, "first+second".len());
    assert_eq!(get_directly(&server, "k").as_deref(), Some("first+second"));

    // The rule claimed only the first SET; the next one goes through at once.
    let () = redis::cmd("SET")
        .arg("k2")
        .arg("now")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(get_directly(&server, "k2").as_deref(), Some("now"));
    assert_eq!(rule.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_command_is_discarded_when_its_server_connection_is_killed() {
    let (server, proxy) = setup().await;
    let mut con = client_with_timeout(&proxy.url(), SOON).await;
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut con)
        .await
        .unwrap();
    let hold = Duration::from_millis(500);
    let rule = proxy.add_rule(Rule::command_to(Match::command("SET")).first(1).delay(hold));

    let sent = Instant::now();
    let set = tokio::spawn({
        let mut con = con.clone();
        async move {
            redis::cmd("SET")
                .arg("k")
                .arg("late")
                .query_async::<()>(&mut con)
                .await
        }
    });
    assert!(poll_until_async(SOON, || async { rule.hits() == 1 }).await);
    assert_eq!(get_directly(&server, "k"), None);
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(killed, 1, "the proxied connection {id} was not found");
    let killed_at = sent.elapsed();
    assert!(
        killed_at < hold,
        "killed after {killed_at:?}, not during the hold"
    );

    // The proxy closes the client side too, so the caller learns at once.
    let error = set.await.unwrap().unwrap_err();
    assert!(
        !error.is_timeout(),
        "expected a closed connection, got {error}"
    );
    assert!(poll_until_async(SOON, || async { proxy.active_connections() == 0 }).await);

    // Let the hold run out (this wait is the scenario), with a margin.
    tokio::time::sleep_until((sent + hold + Duration::from_millis(200)).into()).await;
    assert_eq!(
        get_directly(&server, "k"),
        None,
        "the held SET was delivered after its connection was killed"
    );
    assert_eq!(info_field(&server, "clients", "connected_clients"), 1);
    assert_eq!(rule.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_command_is_still_delivered_after_its_client_disconnects() {
    let (server, proxy) = setup().await;
    let mut raw = Raw::connect(proxy.addr()).await;
    raw.send(&[&["PING"]]).await;
    raw.expect(b"+PONG\r\n", SOON).await;
    assert_eq!(info_field(&server, "clients", "connected_clients"), 2);
    let hold = Duration::from_millis(400);
    let rule = proxy.add_rule(Rule::command_to(Match::command("SET")).first(1).delay(hold));

    let sent = Instant::now();
    raw.send(&[&["SET", "k", "held"], &["APPEND", "k", "+after"]])
        .await;
    assert!(poll_until_async(SOON, || async { proxy.commands_seen() == 3 }).await);
    drop(raw);
    let early = get_directly(&server, "k");
    let checked = sent.elapsed();
    assert!(
        checked < hold,
        "checked after {checked:?}, too late to tell"
    );
    assert_eq!(early, None, "a command reached the server during the hold");

    // Like a kernel flushing a closed socket: delivered late, in order...
    assert!(
        poll_until_async(SOON, || async {
            get_directly(&server, "k").as_deref() == Some("held+after")
        })
        .await,
        "the held commands were not delivered after the client left"
    );
    let applied = sent.elapsed();
    assert!(
        applied >= hold,
        "applied after {applied:?}, before the hold ended"
    );
    // ... then the server connection is closed.
    assert!(poll_until_async(SOON, || async { proxy.active_connections() == 0 }).await);
    assert!(
        poll_until_async(SOON, || async {
            info_field(&server, "clients", "connected_clients") == 1
        })
        .await,
        "the upstream connection stayed open"
    );
    assert_eq!(rule.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_keep_flowing_while_a_command_is_held() {
    let (server, proxy) = setup().await;
    let hold = Duration::from_millis(500);
    let rule = proxy.add_rule(Rule::command_to(Match::command("SET")).first(1).delay(hold));
    let mut raw = Raw::connect(proxy.addr()).await;

    let sent = Instant::now();
    // One write: the BLPOP goes through at once, the SET behind it is held.
    raw.send(&[&["BLPOP", "list", "10"], &["SET", "k", "v"]])
        .await;
    assert!(
        poll_until_async(SOON, || async {
            info_field(&server, "clients", "blocked_clients") == 1
        })
        .await
    );
    let pushed: u64 = redis::cmd("RPUSH")
        .arg("list")
        .arg("x")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(pushed, 1);

    raw.expect(b"*2\r\n$4\r\nlist\r\n$1\r\nx\r\n", SOON).await;
    let replied = sent.elapsed();
    assert!(
        replied < hold,
        "the BLPOP reply waited {replied:?}, for the held command"
    );
    assert_eq!(get_directly(&server, "k"), None);

    raw.expect(b"+OK\r\n", SOON).await;
    let applied = sent.elapsed();
    assert!(
        applied >= hold,
        "SET answered after {applied:?}, before its hold"
    );
    assert_eq!(get_directly(&server, "k").as_deref(), Some("v"));
    assert_eq!(rule.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_command_is_still_delivered_after_its_client_resets_and_a_reply_write_fails() {
    let (server, proxy) = setup().await;
    let mut raw = Raw::connect(proxy.addr()).await;
    raw.send(&[&["PING"]]).await;
    raw.expect(b"+PONG\r\n", SOON).await;
    let hold = Duration::from_millis(400);
    let rule = proxy.add_rule(Rule::command_to(Match::command("SET")).first(1).delay(hold));

    let sent = Instant::now();
    // The BLPOP goes through and times out at the server after 100 ms, when
    // the client is gone: writing its reply to the client fails.
    raw.send(&[&["BLPOP", "list", "0.1"], &["SET", "k", "held"]])
        .await;
    assert!(poll_until_async(SOON, || async { proxy.commands_seen() == 3 }).await);
    // Close with RST instead of FIN.
    socket2::SockRef::from(&raw.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(raw);
    let early = get_directly(&server, "k");
    let checked = sent.elapsed();
    assert!(
        checked < hold,
        "checked after {checked:?}, too late to tell"
    );
    assert_eq!(early, None, "a command reached the server during the hold");

    assert!(
        poll_until_async(SOON, || async {
            get_directly(&server, "k").as_deref() == Some("held")
        })
        .await,
        "the held SET was not delivered after the client reset"
    );
    let applied = sent.elapsed();
    assert!(
        applied >= hold,
        "applied after {applied:?}, before the hold ended"
    );
    assert!(poll_until_async(SOON, || async { proxy.active_connections() == 0 }).await);
    assert!(
        poll_until_async(SOON, || async {
            info_field(&server, "clients", "connected_clients") == 1
        })
        .await,
        "the upstream connection stayed open"
    );
    assert_eq!(rule.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_command_is_still_delivered_after_a_redis_rs_client_gives_up_and_drops() {
    let (server, proxy) = setup().await;
    let hold = Duration::from_millis(800);
    let calls = set_calls(&server);
    let (sent, _id, rule) = redis_rs_gives_up_on_a_held_set(&server, &proxy, hold).await;

    assert!(
        poll_until_async(SOON, || async {
            get_directly(&server, "k").as_deref() == Some("held")
        })
        .await,
        "the held SET was not delivered after its redis-rs client dropped"
    );
    let applied = sent.elapsed();
    assert!(
        applied >= hold,
        "applied after {applied:?}, before the hold ended"
    );
    assert_eq!(set_calls(&server), calls + 1);
    // ... then the server connection is closed.
    assert!(poll_until_async(SOON, || async { proxy.active_connections() == 0 }).await);
    assert!(
        poll_until_async(SOON, || async {
            info_field(&server, "clients", "connected_clients") == 1
        })
        .await,
        "the upstream connection stayed open"
    );
    assert_eq!(rule.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_command_of_a_departed_client_is_discarded_when_the_server_kills_its_connection() {
    // What a client that fences abandoned connections (`CLIENT KILL ID`
    // before its next command) does: the server closes the connection, so
    // the held command must never run.
    let (server, proxy) = setup().await;
    let hold = Duration::from_millis(800);
    let calls = set_calls(&server);
    let (sent, id, rule) = redis_rs_gives_up_on_a_held_set(&server, &proxy, hold).await;
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(killed, 1, "the proxied connection {id} was not found");
    let killed_at = sent.elapsed();
    assert!(
        killed_at < hold,
        "killed after {killed_at:?}, not during the hold"
    );
    assert!(poll_until_async(SOON, || async { proxy.active_connections() == 0 }).await);

    // Let the hold run out (this wait is the scenario), with a margin.
    tokio::time::sleep_until((sent + hold + Duration::from_millis(200)).into()).await;
    assert_eq!(
        get_directly(&server, "k"),
        None,
        "the held SET was delivered after its connection was killed"
    );
    assert_eq!(set_calls(&server), calls);
    assert_eq!(rule.hits(), 1);
}

/// A redis-rs caller giving up on a command the proxy holds: a multiplexed
/// connection without a response timeout, warmed up with `CLIENT ID`, sends
/// `SET k held` (held for `hold`) under its own 250 ms timeout, then drops
/// every handle, which ends the driver task and closes its socket. Returns
/// when the SET was sent, the connection's id at the server, and the rule.
async fn redis_rs_gives_up_on_a_held_set(
    server: &RedisServer,
    proxy: &FaultProxy,
    hold: Duration,
) -> (Instant, i64, RuleGuard) {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SOON))
        .set_response_timeout(None);
    let mut con = redis::Client::open(proxy.url())
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(info_field(server, "clients", "connected_clients"), 2);
    let rule = proxy.add_rule(Rule::command_to(Match::command("SET")).first(1).delay(hold));

    let sent = Instant::now();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(250),
        redis::cmd("SET")
            .arg("k")
            .arg("held")
            .query_async::<()>(&mut con),
    )
    .await;
    assert!(gave_up.is_err(), "the held SET was answered: {gave_up:?}");
    assert_eq!(rule.hits(), 1);
    drop(con);
    let early = get_directly(server, "k");
    let checked = sent.elapsed();
    assert!(
        checked < hold,
        "checked after {checked:?}, too late to tell"
    );
    assert_eq!(early, None, "the SET reached the server during the hold");
    (sent, id, rule)
}

/// `calls` of `SET` in `INFO commandstats` (0 before the first one).
fn set_calls(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.connection())
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_set:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}
