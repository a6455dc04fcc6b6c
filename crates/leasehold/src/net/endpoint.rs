//! Where a client's Redis is: a fixed address, or the current master named by Sentinel.
//!
//! A fixed endpoint is resolved once. A Sentinel endpoint is resolved again every time a
//! connection is made: the sentinels are asked, in turn, for the address of the named
//! master (`SENTINEL GET-MASTER-ADDR-BY-NAME`), and the sentinel that answered is asked
//! first next time. The caller then checks the server's own `ROLE` before trusting it, so
//! a stale answer (a sentinel that has not yet seen a failover) costs a retry, never a
//! write to a replica.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, RedisError};
use tokio::time::{timeout, Instant};

use crate::net::failure::Failure;
use crate::net::tls::Loaded;

/// The address (or addresses) a client connects to.
pub(crate) enum Endpoint {
    /// One server.
    Fixed(ConnectionInfo),
    /// The master that Sentinel currently names.
    Sentinel {
        /// How to reach each sentinel.
        sentinels: Vec<ConnectionInfo>,
        /// The master's service name in the sentinels' configuration.
        service: String,
        /// Settings for the master (credentials, database, TLS), without its address.
        template: ConnectionInfo,
        /// Index of the sentinel that answered last.
        preferred: AtomicUsize,
    },
    /// A Redis Cluster, reached through any of these seed nodes.
    Cluster(ClusterSeeds),
    /// No single server: a RedLock client talks to its nodes, each through its own
    /// connection; anything that would need "the" server fails clearly.
    Quorum,
}

/// A Redis Cluster's seed nodes and the TLS settings for every node it finds.
#[derive(Clone)]
pub(crate) struct ClusterSeeds {
    pub nodes: Vec<ConnectionInfo>,
    pub tls: Option<Loaded>,
}

impl ClusterSeeds {
    /// A cluster client builder for these seeds, with their TLS settings.
    pub(crate) fn builder(&self) -> redis::cluster::ClusterClientBuilder {
        let builder = redis::cluster::ClusterClientBuilder::new(self.nodes.clone());
        match &self.tls {
            Some(tls) => tls.cluster(builder),
            None => builder,
        }
    }

    /// Whether certificates go unchecked (warned about on every connection).
    pub(crate) fn insecure(&self) -> bool {
        self.nodes.iter().any(crate::net::tls::is_insecure)
    }
}

impl Endpoint {
    /// Whether this endpoint follows a Sentinel-managed master.
    pub(crate) fn is_sentinel(&self) -> bool {
        matches!(self, Endpoint::Sentinel { .. })
    }

    /// The seed nodes, when this endpoint is a Redis Cluster.
    pub(crate) fn cluster(&self) -> Option<&ClusterSeeds> {
        match self {
            Endpoint::Cluster(seeds) => Some(seeds),
            _ => None,
        }
    }

    /// The connection settings of the server to use now.
    pub(crate) async fn resolve(&self, wait: Duration) -> Result<ConnectionInfo, Failure> {
        match self {
            Endpoint::Fixed(info) => Ok(info.clone()),
            Endpoint::Sentinel {
                sentinels,
                service,
                template,
                preferred,
            } => resolve_master(sentinels, service, template, preferred, wait).await,
            Endpoint::Cluster(_) => Err(Failure::NotSent(Some(RedisError::from(
                std::io::Error::other("a Redis Cluster has no single server to connect to"),
            )))),
            Endpoint::Quorum => Err(Failure::NotSent(Some(RedisError::from(
                std::io::Error::other(
                    "a RedLock client has no single server for this operation; use a client for one node",
                ),
            )))),
        }
    }
}

async fn resolve_master(
    sentinels: &[ConnectionInfo],
    service: &str,
    template: &ConnectionInfo,
    preferred: &AtomicUsize,
    wait: Duration,
) -> Result<ConnectionInfo, Failure> {
    let until = Instant::now() + wait;
    let first = preferred.load(Ordering::Relaxed);
    let mut last: Option<RedisError> = None;
    for i in 0..sentinels.len() {
        let at = (first + i) % sentinels.len();
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match ask_sentinel(&sentinels[at], service, left).await {
            Ok(Some((host, port))) => {
                preferred.store(at, Ordering::Relaxed);
                let addr = match template.addr() {
                    ConnectionAddr::TcpTls {
                        insecure,
                        tls_params,
                        ..
                    } => ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure: *insecure,
                        tls_params: tls_params.clone(),
                    },
                    _ => ConnectionAddr::Tcp(host, port),
                };
                return Ok(template.clone().set_addr(addr));
            }
            Ok(None) => {
                last = Some(RedisError::from(std::io::Error::other(format!(
                    "sentinel {} does not know a master called {service:?}",
                    sentinels[at].addr()
                ))));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Failure::NotSent(last))
}

async fn ask_sentinel(
    sentinel: &ConnectionInfo,
    service: &str,
    wait: Duration,
) -> redis::RedisResult<Option<(String, u16)>> {
    let client = redis::Client::open(sentinel.clone())?;
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(wait))
        .set_response_timeout(Some(wait));
    let ask = async {
        let mut con = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(service)
            .query_async::<Option<(String, u16)>>(&mut con)
            .await
    };
    match timeout(wait, ask).await {
        Ok(r) => r,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("sentinel {} did not answer in time", sentinel.addr()),
        ))),
    }
}

/// Whether a `ROLE` reply names a master.
pub(crate) fn is_master_role(role: &redis::Value) -> bool {
    match role {
        redis::Value::Array(items) => {
            matches!(
                items.first(),
                Some(redis::Value::BulkString(b)) if b.as_slice() == b"master"
            ) || matches!(
                items.first(),
                Some(redis::Value::SimpleString(s)) if s == "master"
            )
        }
        _ => false,
    }
}
