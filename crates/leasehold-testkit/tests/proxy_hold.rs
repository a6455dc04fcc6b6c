//! Integration tests for command holds (`Rule::command_to(..).delay(..)`):
//! a command that is still in the network when its client gives up on it.

mod common;

use std::time::{Duration, Instant};

use common::{client_with_timeout, get_directly, info_field, setup, Raw, SOON};
use leasehold_testkit::{poll_until_async, Match, Rule, Verdict};

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
