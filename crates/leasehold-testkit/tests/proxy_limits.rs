//! The proxy's connection limit, in its own test binary because it opens
//! several hundred sockets.

mod common;

use common::{Raw, SOON};
use leasehold_testkit::{poll_until_async, proxy::MAX_CONNECTIONS, FaultProxy, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_reset() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut clients = Vec::with_capacity(MAX_CONNECTIONS);
    for _ in 0..MAX_CONNECTIONS {
        let mut raw = Raw::connect(proxy.addr()).await;
        raw.send(&[&["PING"]]).await;
        raw.expect(b"+PONG\r\n", SOON).await;
        clients.push(raw);
    }
    assert_eq!(proxy.active_connections(), MAX_CONNECTIONS);

    Raw::expect_refused(proxy.addr()).await;
    assert_eq!(proxy.connections_refused(), 1);

    drop(clients.pop());
    assert!(
        poll_until_async(SOON, || async {
            proxy.active_connections() == MAX_CONNECTIONS - 1
        })
        .await
    );
    let mut again = Raw::connect(proxy.addr()).await;
    again.send(&[&["PING"]]).await;
    again.expect(b"+PONG\r\n", SOON).await;
}
