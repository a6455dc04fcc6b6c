//! The client: connection settings, shared state, background releases and shutdown.
//!
//! A [`Client`] is cheap to clone (an `Arc`). It owns one multiplexed command connection
//! (replaced when a command's outcome becomes unknown), one lazily started pub/sub
//! connection shared by all waiters, the per-name local wait queues, and a task tracker for
//! background releases so that [`Client::shutdown`] can drain them. Building a client does
//! no network I/O (it reads this machine's host name once, for the holder metadata that
//! every grant stores); invalid settings are rejected by [`ClientBuilder::build`].

pub(crate) mod context;
pub(crate) mod diagnose;
pub(crate) mod inspect;
pub(crate) mod inspect_sets;
pub(crate) mod listing;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::client::context::Inner;
use crate::error::{human, Error, Result};
use crate::lock::Lock;
use crate::net::conn::Connector;
use crate::net::endpoint::{ClusterSeeds, Endpoint};
use crate::net::tls::TlsConfig;
use crate::net::wait::Waker;
use crate::protocol::keys::{validate_name, validate_prefix, LockKeys, DEFAULT_PREFIX};
use crate::protocol::scripts::Scripts;
use crate::validate::validate_ttl;

/// The default lease length.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// The default time `acquire()` waits for a contended lock.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default response timeout of one command.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Which Redis deployment a client talks to.
#[derive(Clone)]
enum Topology {
    /// One server.
    Single(String),
    /// The master a set of sentinels names.
    Sentinel {
        sentinels: Vec<String>,
        service: String,
    },
    /// Independent masters, locked by quorum (RedLock).
    RedLock(Vec<String>),
    /// A Redis Cluster, found through these seed nodes.
    Cluster(Vec<String>),
}

impl Topology {
    /// Every URL given.
    fn urls(&self) -> impl Iterator<Item = &String> {
        let urls: &[String] = match self {
            Topology::Single(url) => std::slice::from_ref(url),
            Topology::Sentinel { sentinels, .. } => sentinels,
            Topology::RedLock(urls) | Topology::Cluster(urls) => urls,
        };
        urls.iter()
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |urls: &[String]| urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>();
        match self {
            Topology::Single(url) => f.write_str(&redact_url(url)),
            Topology::Sentinel { sentinels, service } => f
                .debug_struct("Sentinel")
                .field("sentinels", &redacted(sentinels))
                .field("service", service)
                .finish(),
            Topology::RedLock(nodes) => f.debug_tuple("RedLock").field(&redacted(nodes)).finish(),
            Topology::Cluster(nodes) => f.debug_tuple("Cluster").field(&redacted(nodes)).finish(),
        }
    }
}

/// Settings for a [`Client`]; see [`Client::builder`], [`Client::sentinel_builder`] and
/// [`Client::redlock_builder`].
#[derive(Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ClientBuilder {
    topology: Topology,
    username: Option<String>,
    password: Option<String>,
    connect_timeout: Duration,
    response_timeout: Duration,
    prefix: String,
    default_ttl: Duration,
    default_wait: Duration,
    replica_acks: Option<(u32, Duration)>,
    node_timeout: Option<Duration>,
    tls: Option<TlsConfig>,
    metrics_lock_names: bool,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("topology", &self.topology)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("prefix", &self.prefix)
            .field("default_ttl", &self.default_ttl)
            .field("default_wait", &self.default_wait)
            .field("replica_acks", &self.replica_acks)
            .field("node_timeout", &self.node_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ClientBuilder {
    fn new(topology: Topology) -> Self {
        ClientBuilder {
            topology,
            username: None,
            password: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            prefix: DEFAULT_PREFIX.to_string(),
            default_ttl: DEFAULT_TTL,
            default_wait: DEFAULT_WAIT,
            replica_acks: None,
            node_timeout: None,
            tls: None,
            metrics_lock_names: false,
        }
    }

    /// Label every metric with the lock's name as `lock` (default: off). Only for a
    /// bounded set of names: a name per order or per user makes a series each (see
    /// [`crate::metrics`]; [`Lock::metrics_group`](crate::Lock::metrics_group) is the
    /// bounded alternative).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn metrics_lock_names(mut self, on: bool) -> Self {
        self.metrics_lock_names = on;
        self
    }

    /// Use TLS with these settings for every connection: the server, the sentinels and
    /// the masters they name, every Cluster node, every RedLock node. A `redis://` URL is
    /// then reached over TLS too (as redis-cli's `--tls` does); a `rediss://` URL without
    /// this call trusts the platform's certificate store. A failed handshake is
    /// [`ErrorKind::Tls`](crate::ErrorKind::Tls), naming the check that failed.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// ACL user name, overriding the one in the URL.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Password, overriding the one in the URL.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// How long establishing a connection may take (default 2 s).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one command may wait for its reply (default 1 s). When it passes, the
    /// outcome of the command is unknown; leasehold then resolves it (see
    /// [`Lock::acquire`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Prefix of every key (default `leasehold`). Clients that share locks must use the
    /// same prefix.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Lease length of locks that set none (default 30 s); the watchdog renews a lease
    /// every third of its length unless the lock turns it off.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// How long `acquire()` waits for locks that do not set their own (default 10 s).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn default_wait(mut self, wait: Duration) -> Self {
        self.default_wait = wait;
        self
    }

    /// Require `replicas` replica acknowledgements of every grant (Redis `WAIT`), within
    /// `timeout`, for locks that do not set their own (see
    /// [`Lock::replica_acks`](crate::Lock::replica_acks)). Default: none.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn replica_acks(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replica_acks = Some((replicas, timeout));
        self
    }

    /// RedLock: how long one node may take to answer one request before it counts as
    /// failed for that round (default: a twentieth of the default lease, at most the
    /// response timeout, at least 5 ms). Keep it small relative to the lease: the time a
    /// round takes is subtracted from the lease's validity.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = Some(timeout);
        self
    }

    /// Check the settings and create the client. No network I/O happens here (TLS files
    /// given by [`tls`](Self::tls) are read): the connection is made on first use.
    ///
    /// Must be called within a Tokio runtime (the client spawns its background tasks on
    /// it).
    pub fn build(self) -> Result<Client> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid("leasehold::Client must be built inside a Tokio runtime")
        })?;
        validate_prefix(&self.prefix)?;
        validate_ttl(self.default_ttl)?;
        for (what, d) in [
            ("connect timeout", self.connect_timeout),
            ("response timeout", self.response_timeout),
        ] {
            if d < Duration::from_millis(1) || d > Duration::from_secs(300) {
                return Err(Error::invalid(format!(
                    "{what} {} is out of range: use 1 ms to 300 s",
                    human(d)
                )));
            }
        }
        if self.default_wait > Duration::from_secs(24 * 3600) {
            return Err(Error::invalid(format!(
                "default wait {} is too long: use at most 24 h",
                human(self.default_wait)
            )));
        }
        if let Some((n, t)) = self.replica_acks {
            if n == 0 || n > 64 || t < Duration::from_millis(1) || t > Duration::from_secs(60) {
                return Err(Error::invalid(format!(
                    "replica acknowledgements: {n} replicas within {} is out of range: use 1 to 64 replicas and 1 ms to 60 s",
                    human(t)
                )));
            }
        }
        if let Some(t) = self.node_timeout {
            if t < Duration::from_millis(1) || t > self.response_timeout {
                return Err(Error::invalid(format!(
                    "node timeout {} must be at least 1 ms and at most the response timeout {}",
                    human(t),
                    human(self.response_timeout)
                )));
            }
        }
        static DESCRIBED: std::sync::Once = std::sync::Once::new();
        DESCRIBED.call_once(crate::metrics::describe);
        let tls = self
            .tls
            .as_ref()
            .map(TlsConfig::load)
            .transpose()
            .map_err(Error::invalid)?;
        if tls.is_some() || self.topology.urls().any(|u| u.starts_with("rediss://")) {
            crate::net::tls::install_provider();
        }
        let tls = tls.as_ref();
        let (endpoint, nodes) = match &self.topology {
            Topology::Single(url) => (
                Endpoint::Fixed(checked_info(url, &self.username, &self.password, tls)?),
                Vec::new(),
            ),
            Topology::Sentinel { sentinels, service } => {
                if sentinels.is_empty() {
                    return Err(Error::invalid("Sentinel: give at least one sentinel URL"));
                }
                if service.is_empty()
                    || service.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(Error::invalid(format!(
                        "Sentinel: master name {service:?} must be non-empty, without spaces"
                    )));
                }
                let infos = sentinels
                    .iter()
                    .map(|u| checked_info(u, &None, &None, tls))
                    .collect::<Result<Vec<_>>>()?;
                let scheme = if sentinels[0].starts_with("rediss://") {
                    "rediss://127.0.0.1:6379/0"
                } else {
                    "redis://127.0.0.1:6379/0"
                };
                let template = checked_info(scheme, &self.username, &self.password, tls)?;
                (
                    Endpoint::Sentinel {
                        sentinels: infos,
                        service: service.clone(),
                        template,
                        preferred: std::sync::atomic::AtomicUsize::new(0),
                    },
                    Vec::new(),
                )
            }
            Topology::RedLock(urls) => {
                if urls.is_empty() || urls.len() > 64 {
                    return Err(Error::invalid(format!(
                        "RedLock needs 1 to 64 independent masters (5 is usual), not {}",
                        urls.len()
                    )));
                }
                let mut nodes = Vec::with_capacity(urls.len());
                for url in urls {
                    let mut b = self.clone();
                    b.topology = Topology::Single(url.clone());
                    nodes.push(b.build()?.inner);
                }
                (Endpoint::Quorum, nodes)
            }
            Topology::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(Error::invalid(
                        "Redis Cluster: give at least one seed node URL",
                    ));
                }
                if self.replica_acks.is_some() {
                    return Err(Error::invalid(
                        "replica acknowledgements (WAIT) are not supported on Redis Cluster: WAIT has no key to route it to the lock's node",
                    ));
                }
                let infos = urls
                    .iter()
                    .map(|u| checked_info(u, &self.username, &self.password, tls))
                    .collect::<Result<Vec<_>>>()?;
                let seeds = ClusterSeeds {
                    nodes: infos,
                    tls: tls.cloned(),
                };
                seeds.builder().build().map_err(|e| {
                    Error::invalid(format!(
                        "cannot use these Redis Cluster seed nodes: {}",
                        e.detail().unwrap_or("unsupported settings")
                    ))
                })?;
                (Endpoint::Cluster(seeds), Vec::new())
            }
        };
        let sharded = endpoint.cluster().is_some();
        let endpoint = Arc::new(endpoint);
        let conn = Connector::new(
            endpoint.clone(),
            self.connect_timeout,
            self.response_timeout,
        );
        let ack_conn = Connector::new(
            endpoint.clone(),
            self.connect_timeout,
            self.response_timeout,
        )
        .sharing_server_identity(&conn);
        let node_timeout = self.node_timeout.unwrap_or_else(|| {
            (self.default_ttl / 20)
                .min(self.response_timeout)
                .max(Duration::from_millis(5))
        });
        let holder = crate::lock::holder::HolderMetadata::this_process(None);
        let waker = Waker::new(
            endpoint,
            self.connect_timeout,
            self.response_timeout,
            handle.clone(),
        );
        Ok(Client {
            inner: Arc::new(Inner {
                id: crate::random_id(),
                display_url: format!("{:?}", self.topology),
                conn,
                ack_conn,
                nodes,
                node_timeout,
                replica_acks: self.replica_acks,
                cluster: sharded,
                scripts: Scripts::new(sharded),
                waker,
                queues: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                handle,
                closed: AtomicBool::new(false),
                prefix: self.prefix,
                default_ttl: self.default_ttl,
                default_wait: self.default_wait,
                renewer: Arc::new(crate::lease::renew::Renewer::new()),
                cleanup: crate::backend::cleanup::Cleanup::default(),
                holder_json: Arc::from(holder.to_json()),
                holder,
                metrics_lock_names: self.metrics_lock_names,
            }),
        })
    }
}

/// Parse `url` and check that redis-rs can use it.
fn checked_info(
    url: &str,
    username: &Option<String>,
    password: &Option<String>,
    tls: Option<&crate::net::tls::Loaded>,
) -> Result<redis::ConnectionInfo> {
    let mut info = parse_url(url, username.clone(), password.clone())?;
    if let Some(tls) = tls {
        info = tls.apply(info).map_err(Error::invalid)?;
    }
    redis::Client::open(info.clone()).map_err(|e| {
        Error::invalid(format!(
            "cannot use Redis URL {}: {}",
            redact_url(url),
            e.detail().unwrap_or("unsupported settings")
        ))
    })?;
    Ok(info)
}

fn parse_url(
    url: &str,
    username: Option<String>,
    password: Option<String>,
) -> Result<redis::ConnectionInfo> {
    let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok {
        return Err(Error::invalid(format!(
            "Redis URL {} must start with redis://, rediss:// (TLS) or unix://, e.g. redis://127.0.0.1:6379/0",
            redact_url(url)
        )));
    }
    let mut info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| {
        Error::invalid(format!(
            "Redis URL {} is not valid ({}): expected redis://[user:password@]host[:port][/db]",
            redact_url(url),
            e.detail().unwrap_or("cannot parse it")
        ))
    })?;
    if let Some(u) = username {
        let settings = info.redis_settings().clone().set_username(u);
        info = info.set_redis_settings(settings);
    }
    if let Some(p) = password {
        let settings = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(settings);
    }
    Ok(info)
}

/// The URL with any password replaced by `***`, safe to print: the password in the user
/// part (which may itself contain raw `/`, `?`, `#` or `@`: everything up to the last `@`
/// is user part) and `pass=` / `password=` query parameters. A text that does not parse as
/// a URL once its user part is hidden is shown as `(hidden)` if it could hold a secret.
///
/// ```
/// assert_eq!(
///     leasehold::redact_url("redis://app:pa?ss/w@rd@127.0.0.1:6379/0"),
///     "redis://app:***@127.0.0.1:6379/0"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let could_hide = |t: &str| t.contains(['@', ':', '=']);
    let Some(scheme_end) = url.find("://") else {
        return if could_hide(url) {
            "(hidden)".to_string()
        } else {
            url.to_string()
        };
    };
    let after_scheme = scheme_end + 3;
    // The user part ends at the last `@`: a raw `@`, `/` or `?` in a password must not
    // let the rest of it pass for a host, a path or a query.
    let hidden = match url[after_scheme..].rfind('@') {
        Some(at) => {
            let userinfo = &url[after_scheme..after_scheme + at];
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_string(),
            };
            format!(
                "{}{shown}{}",
                &url[..after_scheme],
                &url[after_scheme + at..]
            )
        }
        None => url.to_string(),
    };
    let Ok(mut parsed) = url::Url::parse(&hidden) else {
        return "(hidden)".to_string();
    };
    let secret = |k: &str| k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password");
    if parsed.query_pairs().any(|(k, _)| secret(&k)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// A connection to one Redis server (or a compatible one) for taking leases.
///
/// ```no_run
/// # async fn demo() -> leasehold::Result<()> {
/// use std::time::Duration;
/// let client = leasehold::Client::builder("redis://127.0.0.1:6379/")
///     .response_timeout(Duration::from_millis(500))
///     .build()?;
/// let guard = client.lock("reports/nightly")?
///     .ttl(Duration::from_secs(60))
///     .acquire()
///     .await?;
/// // ... work, checking guard.fencing_token() at the resource ...
/// guard.release().await?;
/// client.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.display_url)
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

impl Client {
    /// Start configuring a client for `url` (`redis://[user:password@]host[:port][/db]`,
    /// `rediss://…` for TLS, or `unix:///path`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(Topology::Single(url.into()))
    }

    /// Start configuring a client that follows the master Sentinel names `service`
    /// (e.g. `"mymaster"`), asking the sentinels at `sentinels`
    /// (`redis://host:26379`, with the sentinels' own credentials if they need any).
    /// [`username`](ClientBuilder::username) and [`password`](ClientBuilder::password)
    /// apply to the master.
    ///
    /// Every new connection asks the sentinels where the master is and checks the
    /// server's `ROLE` before using it, so after a failover the client follows the new
    /// master. A lease survives a failover if its grant (and renewals) reached the replica
    /// that took over; if not, the next renewal finds it gone and the holder's
    /// [`lost()`](crate::Lease::lost) fires. Require replica acknowledgements
    /// ([`ClientBuilder::replica_acks`]) so that a grant only counts once a replica has it.
    ///
    /// ```no_run
    /// # async fn demo() -> leasehold::Result<()> {
    /// use std::time::Duration;
    /// let client = leasehold::Client::sentinel_builder(
    ///         ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    ///         "mymaster",
    ///     )
    ///     .replica_acks(1, Duration::from_millis(100))
    ///     .build()?;
    /// let guard = client.lock("jobs/import")?.acquire().await?;
    /// # drop(guard); Ok(()) }
    /// ```
    pub fn sentinel_builder<I, S>(sentinels: I, service: impl Into<String>) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new(Topology::Sentinel {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            service: service.into(),
        })
    }

    /// Start configuring a RedLock client over independent masters (usually 5): a lock is
    /// held while a majority of them granted it, within its validity (the lease minus the
    /// time the round took, minus drift). The same [`Lock`] and guard API applies; see
    /// `PROTOCOL.md` for the algorithm and what its fencing tokens guarantee.
    ///
    /// ```no_run
    /// # async fn demo() -> leasehold::Result<()> {
    /// let client = leasehold::Client::redlock_builder([
    ///     "redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379",
    ///     "redis://10.0.0.4:6379", "redis://10.0.0.5:6379",
    /// ])
    /// .build()?;
    /// let guard = client.lock("billing/run")?.acquire().await?;
    /// println!("fencing token {}", guard.fencing_token());
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn redlock_builder<I, S>(nodes: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new(Topology::RedLock(
            nodes.into_iter().map(Into::into).collect(),
        ))
    }

    /// Start configuring a Redis Cluster client, given one or more seed nodes
    /// (`redis://host:port`); the rest of the cluster is discovered from them.
    ///
    /// All keys of one lock share the hash tag `{name}`, so every script runs on the node
    /// owning that slot; `MOVED`/`ASK` redirections and reconnections are handled by
    /// redis-rs's cluster client, whose retries are safe because every leasehold script is
    /// idempotent per request. Waiters are woken through sharded pub/sub
    /// (`SSUBSCRIBE`/`SPUBLISH`), and the watchdog renews leases in batches per slot.
    /// Replica acknowledgements are not available on Cluster, and
    /// [`Client::list`] is not either (it would need a `SCAN` of every node).
    ///
    /// ```no_run
    /// # async fn demo() -> leasehold::Result<()> {
    /// let client = leasehold::Client::cluster_builder(["redis://10.0.0.1:7000"]).build()?;
    /// let guard = client.lock("shipments/eu")?.acquire().await?;
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn cluster_builder<I, S>(seeds: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new(Topology::Cluster(
            seeds.into_iter().map(Into::into).collect(),
        ))
    }

    /// A client for `url` with default settings; see [`Client::builder`].
    pub fn new(url: impl Into<String>) -> Result<Self> {
        Client::builder(url).build()
    }

    /// A handle on the lock called `name`. Validates the name (non-empty, at most 512
    /// bytes, no braces or control characters); does no I/O.
    pub fn lock(&self, name: &str) -> Result<Lock> {
        validate_name(name)?;
        let keys = LockKeys::new(&self.inner.prefix, name);
        Ok(Lock::new(self.inner.clone(), name, keys))
    }

    /// A handle on several locks taken together, all or none, in one canonical order
    /// (names sorted; on Cluster by hash slot first), so callers listing the same names in
    /// any order never deadlock; see
    /// [`LockSet`](crate::LockSet). Refuses an empty list, a name listed twice, more than
    /// [`MAX_LOCK_SET`](crate::MAX_LOCK_SET) names and any name [`lock`](Self::lock)
    /// refuses.
    pub fn locks<I, S>(&self, names: I) -> Result<crate::LockSet>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let members = names
            .into_iter()
            .map(|n| self.lock(n.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        crate::LockSet::new(members, self.inner.default_wait)
    }

    /// A handle on the **fair** lock called `name`: strictly first come, first served
    /// across processes (see [`Lock::fair`]). The same as `client.lock(name)?.fair()`.
    pub fn fair_lock(&self, name: &str) -> Result<Lock> {
        Ok(self.lock(name)?.fair())
    }

    /// A handle on the semaphore called `name` with `capacity` permits (1 to
    /// [`MAX_PERMITS`](crate::MAX_PERMITS)); see [`Semaphore`](crate::Semaphore). Its keys
    /// are disjoint from those of a lock of the same name. Not supported on RedLock clients.
    pub fn semaphore(&self, name: &str, capacity: u32) -> Result<crate::Semaphore> {
        crate::backend::require(&self.inner, crate::backend::Capability::ServerQueues)?;
        validate_name(name)?;
        let keys = crate::protocol::keys::semaphore_keys(&self.inner.prefix, name);
        crate::Semaphore::new(Lock::new(self.inner.clone(), name, keys), capacity)
    }

    /// A handle on the read-write lock called `name`; see [`RwLock`](crate::RwLock). Its
    /// keys are disjoint from those of a lock of the same name. Not supported on RedLock
    /// clients.
    pub fn rwlock(&self, name: &str) -> Result<crate::RwLock> {
        crate::backend::require(&self.inner, crate::backend::Capability::ServerQueues)?;
        validate_name(name)?;
        let (writer, reader) = crate::protocol::keys::rwlock_keys(&self.inner.prefix, name);
        Ok(crate::RwLock::new(
            Lock::new(self.inner.clone(), name, reader),
            Lock::new(self.inner.clone(), name, writer),
        ))
    }

    /// Check that Redis answers.
    ///
    /// # Cancel safety
    /// Cancel-safe: `PING` changes nothing on the server.
    pub async fn ping(&self) -> Result<()> {
        self.inner.check_open()?;
        crate::backend::ping(&self.inner).await
    }

    /// The number of background releases still running.
    pub fn pending_releases(&self) -> usize {
        self.inner.tasks.len()
            + self
                .inner
                .nodes
                .iter()
                .map(|n| n.tasks.len())
                .sum::<usize>()
    }

    /// Stop accepting new acquires and wait for the background releases (from dropped
    /// guards, cancelled or ambiguous acquires) to finish — for at most twice the connect
    /// timeout plus the response timeout (6 s with the defaults; see
    /// [`shutdown_bound`](Self::shutdown_bound)). A release still unconfirmed then is one
    /// whose server does not answer; it goes on while the runtime runs, and what it does not
    /// release expires with its lease. [`shutdown_within`](Self::shutdown_within) takes
    /// another bound and says how many were left.
    ///
    /// # Cancel safety
    /// Cancel-safe: cancelling stops waiting; the releases go on in the background.
    pub async fn shutdown(&self) {
        let left = self.shutdown_within(self.shutdown_bound()).await;
        if left > 0 {
            tracing::warn!(
                left,
                "shutdown: background releases still unconfirmed; what they do not release expires with its lease"
            );
        }
    }

    /// How long [`shutdown`](Self::shutdown) waits at most: 2 × (connect timeout +
    /// response timeout), room for a release to reconnect and be re-run once.
    pub fn shutdown_bound(&self) -> std::time::Duration {
        2 * (self.inner.conn.connect_timeout() + self.inner.conn.response_timeout())
    }

    async fn drain(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        for node in &self.inner.nodes {
            node.closed.store(true, Ordering::Release);
            node.tasks.close();
            node.tasks.wait().await;
        }
    }

    /// Like [`shutdown`](Self::shutdown), waiting at most `limit` for background work;
    /// returns how many background tasks were still running then (0: all drained). Work
    /// left behind is the release of grants whose outcome is unknown: a grant it could not
    /// release expires with its lease.
    ///
    /// # Cancel safety
    /// As for [`shutdown`](Self::shutdown).
    pub async fn shutdown_within(&self, limit: std::time::Duration) -> usize {
        if tokio::time::timeout(limit, self.drain()).await.is_ok() {
            return 0;
        }
        self.pending_releases()
    }

    /// Counters of this client's renewal scheduler (the watchdog).
    pub fn renewal_stats(&self) -> crate::RenewalStats {
        self.inner.renewer.stats()
    }

    /// Counters of coalesced calls: acquire, release and extend calls that were ready
    /// while the connection was busy went to Redis together, as one batch script call
    /// each (calls sent on their own are not counted).
    pub fn batch_stats(&self) -> crate::BatchStats {
        self.inner.conn.coalescer().stats()
    }

    /// The key prefix in use.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("redis://alice:s3cret@h:6379/0"),
            "redis://alice:***@h:6379/0"
        );
        assert_eq!(redact_url("rediss://:pw@h/"), "rediss://:***@h/");
        assert_eq!(redact_url("redis://h:1/"), "redis://h:1/");
        assert_eq!(
            redact_url("redis://default:ab/SECRET+=@host:6379/0"),
            "redis://default:***@host:6379/0"
        );
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=1&pass=SECRET"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(
            redact_url("unix:///s.sock?user=u&password=SECRET"),
            "unix:///s.sock?user=u&password=***"
        );
        assert_eq!(redact_url("u:SECRET@host"), "(hidden)");
        assert_eq!(
            redact_url("redis://u:pa?ss#x@h/0"),
            "redis://u:***@h/0",
            "a raw ? or # in the password"
        );
        assert_eq!(
            redact_url("redis://SECRET@h/"),
            "redis://***@h/",
            "a lone user part may be a password"
        );
        assert_eq!(
            redact_url("redis://h/?%70assword=SECRET"),
            "redis://h/?password=***",
            "an encoded parameter name"
        );
        assert_eq!(redact_url("redis://u:SECRET@[bad/"), "(hidden)");
    }

    #[tokio::test]
    async fn bad_urls_are_rejected_without_io_and_without_the_password() {
        let e = Client::new("http://u:pw@localhost").unwrap_err();
        assert!(e.is_invalid_input());
        assert!(!e.to_string().contains("pw"), "{e}");
        let e = Client::new("redis://u:pw@host:notaport").unwrap_err();
        assert!(e.is_invalid_input(), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
        assert!(Client::new("rediss://example.invalid:6380/").is_ok());
    }

    #[test]
    fn building_outside_a_runtime_is_a_clear_error() {
        let e = Client::new("redis://127.0.0.1/").unwrap_err();
        assert!(e.to_string().contains("Tokio runtime"));
    }
}
