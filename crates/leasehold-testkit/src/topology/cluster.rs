//! [`RedisCluster`]: cluster-enabled masters, joined by `redis-cli --cluster
//! create`, that together own all 16384 slots.
//!
//! Invariants: [`RedisCluster::start`] returns only once every node reports
//! `cluster_state:ok` with all slots assigned, knows every other node, and
//! answers `CLUSTER SLOTS` exactly like the others; the slot map it then
//! records is what [`RedisCluster::node_for_slot`] answers from. Nodes start
//! without replicas, so slots only move if a test moves them: with
//! [`RedisCluster::add_replica`] and [`RedisCluster::failover`], or
//! [`RedisCluster::move_slot`] (see `moves.rs`), which record the new map. Each node's cluster
//! bus listens on a port picked like the client port (explicit
//! `cluster-port`), because the default, port + 10000, does not exist for
//! ports above 55535, which are common ephemeral ports.
//!
//! [`RedisCluster::proxied`] puts a [`FaultProxy`] in front of every node and
//! makes the nodes announce the proxies' ports (`cluster-announce-port`)
//! instead of their own, so a cluster client that learns addresses from
//! `CLUSTER SLOTS` or `MOVED` talks to the nodes only through the proxies.
//! The cluster bus keeps the nodes' real bus ports, so gossip never passes
//! through a proxy. The slot map is kept by node index, never by port, so it
//! stays valid whichever ports the nodes announce.

use std::{
    env, fmt,
    fs::File,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::FaultProxy;

mod moves;

use super::{
    executable_of, info_field, is_executable, key_slot, search_path, start_parallel, Probe,
    SLOT_COUNT,
};
use crate::{poll_until, RedisServer};

/// Environment variable naming the `redis-cli` binary (a path, or a name
/// looked up in `PATH`).
pub const CLI_ENV: &str = "LEASEHOLD_REDIS_CLI";
/// `cluster-node-timeout`, in milliseconds.
pub const NODE_TIMEOUT_MS: u64 = 2000;
/// Fewest masters `redis-cli --cluster create` accepts.
pub const MIN_MASTERS: usize = 3;
/// How long `redis-cli --cluster create` may run.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nodes may take to agree after `redis-cli` returned.
const AGREE_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts per node, each with a fresh cluster bus port (another
/// process may take the one we picked before redis binds it).
const NODE_START_ATTEMPTS: usize = 5;
const CLI_OUTPUT_FILE: &str = "redis-cli-cluster-create.log";
/// How long the nodes may take to learn each other's newly announced ports.
/// Gossip carries a change in about a second (each node pings every other at
/// least every `NODE_TIMEOUT_MS / 2`); the bound is generous for loaded hosts.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(30);

/// One contiguous range of slots and the port of the master that serves it,
/// as `CLUSTER SLOTS` reported it while the cluster formed (before any
/// [`RedisCluster::proxied`]); only used to derive the index-based slot map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SlotRange {
    start: u16,
    end: u16,
    port: u16,
}

/// A Redis Cluster of masters (and the replicas a test adds); dropping the
/// value kills and reaps every node.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// `owner[slot]` is the index of the node serving `slot`.
    owner: Vec<usize>,
}

impl RedisCluster {
    /// Starts a cluster of `masters` nodes (at least 3) and waits until it
    /// serves every slot.
    ///
    /// # Panics
    ///
    /// Where [`try_start`](Self::try_start) returns an error, with its message
    /// (which includes the logs).
    pub fn start(masters: usize) -> Self {
        Self::try_start(masters)
            .unwrap_or_else(|error| panic!("cannot start a {masters}-node cluster: {error}"))
    }

    /// Starts `masters` cluster-enabled nodes in parallel, joins them with
    /// `redis-cli --cluster create ... --cluster-replicas 0`, and waits until
    /// every node reports `cluster_state:ok` with 16384 slots assigned and
    /// all nodes answer the same `CLUSTER SLOTS`.
    ///
    /// `redis-cli` is `$LEASEHOLD_REDIS_CLI` if set, else the one next to the
    /// `redis-server` binary, else the one in `PATH`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for fewer than 3 masters; `NotFound` if a binary is
    /// missing; otherwise an error whose message includes `redis-cli`'s
    /// output and the nodes' logs.
    pub fn try_start(masters: usize) -> io::Result<Self> {
        Self::try_start_with(masters, None)
    }

    /// Like [`start`](Self::start), with TLS: every node also listens for TLS with
    /// `listener`'s certificate and the cluster bus runs over TLS (`tls-cluster yes`).
    /// A TLS client ([`tls_urls`](Self::tls_urls)) is told the nodes' TLS ports; the plain
    /// ports stay open for the kit's own checks.
    ///
    /// # Panics
    ///
    /// If the cluster does not form (the message includes the logs).
    pub fn start_tls(masters: usize, listener: crate::TlsListener) -> Self {
        Self::try_start_with(masters, Some(listener))
            .unwrap_or_else(|error| panic!("cannot start a {masters}-node TLS cluster: {error}"))
    }

    /// The TLS URL of every node, in index order (a cluster from [`start_tls`](Self::start_tls)).
    pub fn tls_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::tls_url).collect()
    }

    fn try_start_with(masters: usize, tls: Option<crate::TlsListener>) -> io::Result<Self> {
        if masters < MIN_MASTERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a cluster needs at least {MIN_MASTERS} masters, not {masters}"),
            ));
        }
        let nodes = start_parallel(masters, |_| start_node(tls.as_ref()))?;
        let cli = find_cli(&executable_of(&nodes[0])?)?;
        create(&cli, &nodes)?;
        let slots = wait_until_agreed(&nodes)?;
        let owner = owners(&nodes, &slots)?;
        Ok(Self { nodes, owner })
    }

    /// The URL of every node, in index order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The address of every node, in index order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// All nodes, in index order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `i`, mutably (to stop, restart or pause it). A restarted node
    /// keeps its cluster identity (`nodes.conf` in its directory) but no data,
    /// and announces its own port again, not a proxy's: call
    /// [`announce_ports`](Self::announce_ports) after restarting a node of a
    /// [`proxied`](Self::proxied) cluster.
    ///
    /// # Panics
    ///
    /// If `i` is not a node index.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// The index of the node that served `slot` when the cluster formed.
    ///
    /// # Panics
    ///
    /// If `slot >= 16384`.
    pub fn node_for_slot(&self, slot: u16) -> usize {
        assert!(slot < SLOT_COUNT, "slot {slot} is not below {SLOT_COUNT}");
        self.owner[usize::from(slot)]
    }

    /// The index of the node that serves `key` (see [`node_for_slot`](Self::node_for_slot)).
    pub fn node_for_key(&self, key: &[u8]) -> usize {
        self.node_for_slot(Self::slot_of(key))
    }

    /// The slot of `key`, as `CLUSTER KEYSLOT` computes it (hash tags
    /// included); see [`key_slot`].
    pub fn slot_of(key: &[u8]) -> u16 {
        key_slot(key)
    }

    /// The log tails of all nodes, for panic messages.
    pub fn logs(&self) -> String {
        node_logs(&self.nodes)
    }

    /// Starts one [`FaultProxy`] per node (proxy `i` forwards to node `i`)
    /// and makes every node announce its proxy's port, so that cluster
    /// clients reach the nodes only through the proxies: see
    /// [`announce_ports`](Self::announce_ports), which this runs on a blocking
    /// thread. Connect clients with [`proxied_urls`](Self::proxied_urls)
    /// after this returns: a cluster client created before keeps the node
    /// ports it learnt until it refreshes its slot map.
    ///
    /// Keep the proxies alive while the cluster is in use: a node keeps
    /// announcing its proxy's port after the proxy is dropped. Direct
    /// connections to [`nodes`](Self::nodes) and
    /// [`node_for_slot`](Self::node_for_slot) are unaffected.
    ///
    /// # Errors
    ///
    /// Any error starting a proxy; see [`announce_ports`](Self::announce_ports)
    /// for the rest.
    ///
    /// # Cancel safety
    ///
    /// Cancelling drops the proxies started so far. If the ports were being
    /// announced, that continues on its blocking thread, so the nodes may end
    /// up announcing ports nobody listens on; pass the nodes' own ports (from
    /// [`addrs`](Self::addrs)) to [`announce_ports`](Self::announce_ports) to
    /// undo it.
    pub async fn proxied(&self) -> io::Result<Vec<FaultProxy>> {
        let mut proxies = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            proxies.push(FaultProxy::start(node.addr()).await?);
        }
        let ports: Vec<u16> = proxies.iter().map(|proxy| proxy.addr().port()).collect();
        let urls = self.urls();
        tokio::task::spawn_blocking(move || announce(&urls, &ports))
            .await
            .map_err(io::Error::other)?
            .map_err(|error| self.with_logs(error))?;
        Ok(proxies)
    }

    /// Makes node `i` announce `ports[i]` as its client port
    /// (`CONFIG SET cluster-announce-port`, with `cluster-announce-bus-port`
    /// pinned to its real cluster bus port), then polls until every node's
    /// `CLUSTER SLOTS` and `CLUSTER SHARDS` (where the server has it) name
    /// each node by its announced port. Blocks the calling thread, typically
    /// for about a second while gossip spreads the change. Passing the nodes'
    /// own ports undoes a [`proxied`](Self::proxied).
    ///
    /// The setting is not persisted: a restarted node announces its own port
    /// again until this is called once more.
    ///
    /// # Errors
    ///
    /// `InvalidInput` unless there is one port per node; `TimedOut` if the
    /// nodes do not all agree within 30 s; any error a node returns. All but
    /// `InvalidInput` include the nodes' logs.
    pub fn announce_ports(&self, ports: &[u16]) -> io::Result<()> {
        announce(&self.urls(), ports).map_err(|error| self.with_logs(error))
    }

    /// The URL of every proxy, in node order: the initial nodes for a cluster
    /// client that must only talk through the proxies of
    /// [`proxied`](Self::proxied).
    pub fn proxied_urls(proxies: &[FaultProxy]) -> Vec<String> {
        proxies.iter().map(FaultProxy::url).collect()
    }

    fn with_logs(&self, error: io::Error) -> io::Error {
        if error.kind() == io::ErrorKind::InvalidInput {
            return error;
        }
        io::Error::new(error.kind(), format!("{error}{}", self.logs()))
    }
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

fn node_logs(nodes: &[RedisServer]) -> String {
    super::logs(
        nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (format!("cluster node {i}"), node)),
    )
}

/// Starts one cluster-enabled node with its own bus port.
fn start_node(tls: Option<&crate::TlsListener>) -> io::Result<RedisServer> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let bus_port = super::free_port()?;
        let builder = match tls {
            Some(t) => RedisServer::builder().tls(t.clone()).args([
                "--tls-cluster",
                "yes",
                "--tls-replication",
                "yes",
            ]),
            None => RedisServer::builder(),
        };
        let result = builder
            .args(["--cluster-enabled", "yes"])
            // Relative to the server's `--dir`, its temporary directory.
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--cluster-port", &bus_port.to_string()])
            .args(["--cluster-announce-ip", "127.0.0.1"])
            // A replica added by a test syncs at once, not after the diskless delay.
            .args(["--repl-diskless-sync-delay", "0"])
            .try_start();
        match result {
            Err(error)
                if error.kind() != io::ErrorKind::NotFound && attempt < NODE_START_ATTEMPTS => {}
            result => return result,
        }
    }
}

/// Resolves `redis-cli`: `$LEASEHOLD_REDIS_CLI`, else next to `server_binary`,
/// else from `PATH`.
fn find_cli(server_binary: &Path) -> io::Result<PathBuf> {
    if let Some(value) = env::var_os(CLI_ENV).filter(|value| !value.is_empty()) {
        let path = PathBuf::from(&value);
        let found = if path.components().count() > 1 {
            Some(path).filter(|path| is_executable(path))
        } else {
            search_path(&value)
        };
        return found.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{CLI_ENV}={} does not name an executable redis-cli",
                    value.to_string_lossy()
                ),
            )
        });
    }
    let sibling = server_binary.with_file_name("redis-cli");
    if is_executable(&sibling) {
        return Ok(sibling);
    }
    search_path("redis-cli".as_ref()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "redis-cli was found neither next to {} nor in PATH. Install it with \
                 `apt-get install -y redis-tools` (Debian/Ubuntu), or set {CLI_ENV}",
                server_binary.display()
            ),
        )
    })
}

/// Runs `redis-cli --cluster create` over `nodes`, killing it if it runs
/// longer than [`CREATE_TIMEOUT`].
fn create(cli: &Path, nodes: &[RedisServer]) -> io::Result<()> {
    let output_path = nodes[0].dir().join(CLI_OUTPUT_FILE);
    let output = File::create(&output_path)?;
    let mut child = Command::new(cli)
        .args(["--cluster", "create"])
        .args(nodes.iter().map(|node| node.addr().to_string()))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .spawn()
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot run {}: {error}", cli.display()),
            )
        })?;
    let mut status = None;
    poll_until(CREATE_TIMEOUT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    let describe = |what: String| {
        let output = std::fs::read_to_string(&output_path).unwrap_or_default();
        io::Error::other(format!(
            "{} --cluster create {what}; its output:\n{output}{}",
            cli.display(),
            node_logs(nodes)
        ))
    };
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(describe(format!("exited with {status}"))),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(describe(format!(
                "did not finish within {CREATE_TIMEOUT:?}"
            )))
        }
    }
}

/// Polls until every node reports a healthy cluster that knows all nodes and
/// all nodes answer the same `CLUSTER SLOTS`; returns that slot map.
fn wait_until_agreed(nodes: &[RedisServer]) -> io::Result<Vec<SlotRange>> {
    agreed_map(nodes, AGREE_TIMEOUT, |_| true)
}

/// Polls for up to `limit` until every node reports a healthy cluster that
/// knows all nodes, all answer the same `CLUSTER SLOTS`, and `wanted` accepts
/// it; returns that slot map.
fn agreed_map(
    nodes: &[RedisServer],
    limit: Duration,
    wanted: impl Fn(&[SlotRange]) -> bool,
) -> io::Result<Vec<SlotRange>> {
    let mut probes: Vec<Probe> = nodes.iter().map(|node| Probe::new(node.url())).collect();
    let known = nodes.len().to_string();
    let slot_count = SLOT_COUNT.to_string();
    let mut last = String::from("not asked yet");
    let mut agreed = None;
    let ok = poll_until(limit, || {
        let mut maps = Vec::with_capacity(probes.len());
        for (i, probe) in probes.iter_mut().enumerate() {
            match node_view(probe, &known, &slot_count) {
                Ok(map) => maps.push(map),
                Err(why) => {
                    last = format!("node {i}: {why}");
                    return false;
                }
            }
        }
        if !maps.windows(2).all(|pair| pair[0] == pair[1]) {
            last = format!("nodes disagree on CLUSTER SLOTS: {maps:?}");
            return false;
        }
        let map = maps.pop().unwrap_or_default();
        if !wanted(&map) {
            last = format!("not the slot map wanted yet: {map:?}");
            return false;
        }
        agreed = Some(map);
        true
    });
    match agreed {
        Some(map) if ok => Ok(map),
        _ => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the cluster did not become healthy and consistent within {limit:?}; \
                 last: {last}{}",
                node_logs(nodes)
            ),
        )),
    }
}

/// One node's slot map, if it reports a healthy cluster with every slot
/// assigned and every node known; else what is missing.
fn node_view(probe: &mut Probe, known: &str, slot_count: &str) -> Result<Vec<SlotRange>, String> {
    let info: String = probe.query(redis::cmd("CLUSTER").arg("INFO"))?;
    for (field, wanted) in [
        ("cluster_state", "ok"),
        ("cluster_slots_assigned", slot_count),
        ("cluster_slots_ok", slot_count),
        ("cluster_known_nodes", known),
    ] {
        let got = info_field(&info, field);
        if got != Some(wanted) {
            return Err(format!("{field} is {got:?}, not {wanted:?}"));
        }
    }
    let reply: redis::Value = probe.query(redis::cmd("CLUSTER").arg("SLOTS"))?;
    parse_slots(reply)
}

/// `CLUSTER SLOTS` as sorted ranges with the master's port.
fn parse_slots(reply: redis::Value) -> Result<Vec<SlotRange>, String> {
    let entries: Vec<Vec<redis::Value>> =
        redis::from_redis_value(reply).map_err(|error| format!("CLUSTER SLOTS: {error}"))?;
    let mut ranges = entries
        .into_iter()
        .map(|entry| {
            let [start, end, master, ..] = entry.as_slice() else {
                return Err(format!("short CLUSTER SLOTS entry {entry:?}"));
            };
            let start: u16 = redis::from_redis_value_ref(start).map_err(|e| e.to_string())?;
            let end: u16 = redis::from_redis_value_ref(end).map_err(|e| e.to_string())?;
            let master: Vec<redis::Value> =
                redis::from_redis_value_ref(master).map_err(|e| e.to_string())?;
            let port: u16 = master
                .get(1)
                .ok_or_else(|| format!("no port in {master:?}"))
                .and_then(|port| redis::from_redis_value_ref(port).map_err(|e| e.to_string()))?;
            Ok(SlotRange { start, end, port })
        })
        .collect::<Result<Vec<_>, String>>()?;
    ranges.sort_unstable();
    Ok(ranges)
}

/// Expands the agreed slot map into `owner[slot] = node index`, checking that
/// it covers every slot exactly once and names only our nodes.
fn owners(nodes: &[RedisServer], slots: &[SlotRange]) -> io::Result<Vec<usize>> {
    let mut owner = vec![usize::MAX; usize::from(SLOT_COUNT)];
    for range in slots {
        if range.start > range.end || range.end >= SLOT_COUNT {
            return Err(io::Error::other(format!("bad slot range {range:?}")));
        }
        let node = nodes
            .iter()
            .position(|node| node.port() == range.port)
            .ok_or_else(|| {
                io::Error::other(format!("CLUSTER SLOTS names a foreign node: {range:?}"))
            })?;
        for slot in range.start..=range.end {
            owner[usize::from(slot)] = node;
        }
    }
    match owner.iter().position(|&node| node == usize::MAX) {
        Some(slot) => Err(io::Error::other(format!(
            "slot {slot} is not in the agreed slot map {slots:?}"
        ))),
        None => Ok(owner),
    }
}

/// Makes the node at `urls[i]` announce `ports[i]` and waits until every node
/// reports every node at its announced port; see
/// [`RedisCluster::announce_ports`]. Errors carry no logs (the caller adds
/// them).
fn announce(urls: &[String], ports: &[u16]) -> io::Result<()> {
    if urls.len() != ports.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} ports for {} cluster nodes", ports.len(), urls.len()),
        ));
    }
    let mut probes: Vec<Probe> = urls.iter().map(Probe::new).collect();
    let mut wanted = Vec::with_capacity(probes.len());
    for (i, (probe, &port)) in probes.iter_mut().zip(ports).enumerate() {
        let id = announce_one(probe, port).map_err(|why| {
            io::Error::other(format!("cannot make node {i} announce port {port}: {why}"))
        })?;
        wanted.push((id, port));
    }
    wanted.sort_unstable();

    let mut last = String::from("not asked yet");
    let agreed = poll_until(ANNOUNCE_TIMEOUT, || {
        for (i, probe) in probes.iter_mut().enumerate() {
            if let Err(why) = check_announced(probe, &wanted) {
                last = format!("node {i}: {why}");
                return false;
            }
        }
        true
    });
    if agreed {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the cluster nodes did not all announce ports {ports:?} within \
                 {ANNOUNCE_TIMEOUT:?}; last: {last}"
            ),
        ))
    }
}

/// Makes one node announce `port` with its real bus port; returns its id.
fn announce_one(probe: &mut Probe, port: u16) -> Result<String, String> {
    let id: String = probe.query(redis::cmd("CLUSTER").arg("MYID"))?;
    let bus_port = bus_port_of(probe)?;
    probe.query::<()>(
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-announce-bus-port")
            .arg(bus_port)
            .arg("cluster-announce-port")
            .arg(port),
    )?;
    Ok(id)
}

/// The node's real cluster bus port (`cluster-port`, or port + 10000 if 0).
fn bus_port_of(probe: &mut Probe) -> Result<u16, String> {
    let config_port = |probe: &mut Probe, name: &str| -> Result<u16, String> {
        let reply: Vec<String> = probe.query(redis::cmd("CONFIG").arg("GET").arg(name))?;
        reply
            .get(1)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("CONFIG GET {name} answered {reply:?}"))
    };
    match config_port(probe, "cluster-port")? {
        0 => config_port(probe, "port")?
            .checked_add(10_000)
            .ok_or_else(|| "no default cluster bus port above 55535".to_owned()),
        port => Ok(port),
    }
}

/// Checks that `probe`'s node names exactly the `wanted` `(node id, port)`
/// pairs in `CLUSTER SHARDS` (if the server has it; it lists every node) and
/// only those in `CLUSTER SLOTS` (which lists the nodes serving slots).
fn check_announced(probe: &mut Probe, wanted: &[(String, u16)]) -> Result<(), String> {
    let reply: redis::Value = probe.query(redis::cmd("CLUSTER").arg("SLOTS"))?;
    let slots = slots_nodes(reply)?;
    if let Some(stray) = slots.iter().find(|pair| !wanted.contains(pair)) {
        return Err(format!(
            "CLUSTER SLOTS names node {stray:?}; wanted only {wanted:?}"
        ));
    }
    match probe.query::<redis::Value>(redis::cmd("CLUSTER").arg("SHARDS")) {
        Ok(reply) => {
            let mut shards = shards_nodes(&reply)?;
            shards.sort_unstable();
            if shards != wanted {
                return Err(format!(
                    "CLUSTER SHARDS names nodes {shards:?}; wanted {wanted:?}"
                ));
            }
        }
        // Redis before 7.0 has no CLUSTER SHARDS.
        Err(why) if why.to_ascii_lowercase().contains("unknown subcommand") => {}
        Err(why) => return Err(format!("CLUSTER SHARDS: {why}")),
    }
    Ok(())
}

/// Every `(node id, port)` in a `CLUSTER SLOTS` reply, masters and replicas.
fn slots_nodes(reply: redis::Value) -> Result<Vec<(String, u16)>, String> {
    let entries: Vec<Vec<redis::Value>> =
        redis::from_redis_value(reply).map_err(|error| format!("CLUSTER SLOTS: {error}"))?;
    let mut nodes = Vec::new();
    for entry in &entries {
        for node in entry.get(2..).unwrap_or_default() {
            let node: Vec<redis::Value> =
                redis::from_redis_value_ref(node).map_err(|e| e.to_string())?;
            let [_ip, port, id, ..] = node.as_slice() else {
                return Err(format!("short node in CLUSTER SLOTS entry {entry:?}"));
            };
            let port: u16 = redis::from_redis_value_ref(port).map_err(|e| e.to_string())?;
            let id: String = redis::from_redis_value_ref(id).map_err(|e| e.to_string())?;
            nodes.push((id, port));
        }
    }
    Ok(nodes)
}

/// Every `(node id, port)` in a `CLUSTER SHARDS` reply.
fn shards_nodes(reply: &redis::Value) -> Result<Vec<(String, u16)>, String> {
    let shards: Vec<redis::Value> =
        redis::from_redis_value_ref(reply).map_err(|error| format!("CLUSTER SHARDS: {error}"))?;
    let mut nodes = Vec::new();
    for shard in &shards {
        let shard_nodes = field(shard, "nodes")?;
        let shard_nodes: Vec<redis::Value> =
            redis::from_redis_value_ref(shard_nodes).map_err(|e| e.to_string())?;
        for node in &shard_nodes {
            let id: String =
                redis::from_redis_value_ref(field(node, "id")?).map_err(|e| e.to_string())?;
            let port: u16 =
                redis::from_redis_value_ref(field(node, "port")?).map_err(|e| e.to_string())?;
            nodes.push((id, port));
        }
    }
    Ok(nodes)
}

/// The value of `name` in a map reply: a RESP3 map, or a RESP2 array of
/// alternating names and values.
fn field<'a>(map: &'a redis::Value, name: &str) -> Result<&'a redis::Value, String> {
    let is_name = |key: &redis::Value| {
        redis::from_redis_value_ref::<String>(key).is_ok_and(|key| key == name)
    };
    let found = match map {
        redis::Value::Map(pairs) => pairs
            .iter()
            .find_map(|(key, value)| is_name(key).then_some(value)),
        redis::Value::Array(items) => items
            .chunks_exact(2)
            .find_map(|pair| is_name(&pair[0]).then_some(&pair[1])),
        _ => None,
    };
    found.ok_or_else(|| format!("no {name:?} in {map:?}"))
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn shards_are_read_from_resp2_arrays_and_resp3_maps() {
        let resp2_node = Value::Array(vec![text("id"), text("a"), text("port"), Value::Int(7001)]);
        let resp3_node = Value::Map(vec![
            (text("port"), Value::Int(7002)),
            (text("id"), text("b")),
        ]);
        let reply = Value::Array(vec![
            Value::Array(vec![
                text("slots"),
                Value::Array(vec![]),
                text("nodes"),
                Value::Array(vec![resp2_node]),
            ]),
            Value::Map(vec![(text("nodes"), Value::Array(vec![resp3_node]))]),
        ]);
        assert_eq!(
            shards_nodes(&reply),
            Ok(vec![("a".to_owned(), 7001), ("b".to_owned(), 7002)])
        );
        assert!(shards_nodes(&Value::Array(vec![Value::Array(vec![text("slots")])])).is_err());
    }
}
