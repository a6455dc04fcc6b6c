//! Helpers shared by the proxy integration tests: a server with a proxy in
//! front of it, direct access to that server, a raw RESP client whose bytes
//! and timing the tests control exactly, and redis-rs connections with
//! explicit response timeouts.
//!
//! Invariant: every read here is bounded by a timeout, so a test that expects
//! bytes which never come fails instead of hanging.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::{io, net::SocketAddr, time::Duration};

use leasehold_testkit::{FaultProxy, RedisServer};
use redis::aio::MultiplexedConnection;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// Generous bound for things that should happen "now".
pub const SOON: Duration = Duration::from_secs(5);
/// How long a test watches for bytes that must not arrive.
pub const QUIET: Duration = Duration::from_millis(250);

/// A fresh server and a proxy in front of it.
pub async fn setup() -> (RedisServer, FaultProxy) {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    (server, proxy)
}

/// `SET key value` on a direct connection to the server.
pub fn set_directly(server: &RedisServer, key: &str, value: &str) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut server.connection())
        .unwrap();
}

/// `GET key` on a direct connection to the server.
pub fn get_directly(server: &RedisServer, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut server.connection())
        .unwrap()
}

/// One numeric field of `INFO section`, read on a direct connection.
pub fn info_field(server: &RedisServer, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query(&mut server.connection())
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

/// A redis-rs multiplexed connection with the given response timeout.
pub async fn client_with_timeout(url: &str, response_timeout: Duration) -> MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SOON))
        .set_response_timeout(Some(response_timeout));
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

/// RESP encoding of one command.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// A plain TCP client speaking RESP by hand.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = timeout(SOON, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Self { stream }
    }

    /// Asserts that a new connection to `addr` is reset by the proxy: on
    /// loopback the RST may already be seen by `connect`, or by the first read.
    pub async fn expect_refused(addr: SocketAddr) {
        match timeout(SOON, TcpStream::connect(addr)).await {
            Err(_) => panic!("connect timed out"),
            Ok(Err(error)) => {
                assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}")
            }
            Ok(Ok(stream)) => Self { stream }.expect_reset(SOON).await,
        }
    }

    /// Sends several commands in one write (a pipeline).
    pub async fn send(&mut self, commands: &[&[&str]]) {
        let bytes: Vec<u8> = commands.iter().flat_map(|args| encode(args)).collect();
        self.send_bytes(&bytes).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads exactly `expected.len()` bytes within `within` and compares.
    pub async fn expect(&mut self, expected: &[u8], within: Duration) {
        let mut got = vec![0; expected.len()];
        match timeout(within, self.stream.read_exact(&mut got)).await {
            Ok(Ok(_)) => assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(expected)
            ),
            Ok(Err(error)) => panic!(
                "reading {:?} failed: {error}",
                String::from_utf8_lossy(expected)
            ),
            Err(_) => panic!(
                "{:?} did not arrive within {within:?}",
                String::from_utf8_lossy(expected)
            ),
        }
    }

    /// Asserts that nothing arrives (and the connection stays open) for `period`.
    pub async fn expect_silence(&mut self, period: Duration) {
        let mut byte = [0; 1];
        match timeout(period, self.stream.read(&mut byte)).await {
            Err(_) => {}
            Ok(Ok(0)) => panic!("connection closed while it should stay silent"),
            Ok(Ok(_)) => panic!("byte {:?} arrived while it should stay silent", byte[0]),
            Ok(Err(error)) => panic!("connection failed while it should stay silent: {error}"),
        }
    }

    /// The outcome of the next read: bytes, end of stream, or an error.
    pub async fn next_read(&mut self, within: Duration) -> io::Result<usize> {
        let mut buf = [0; 64];
        timeout(within, self.stream.read(&mut buf))
            .await
            .expect("no read outcome in time")
    }

    /// Asserts the peer reset the connection (RST, not FIN).
    pub async fn expect_reset(&mut self, within: Duration) {
        match self.next_read(within).await {
            Err(error) => assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}"),
            Ok(n) => panic!("expected a reset, read returned Ok({n})"),
        }
    }
}
