//! [`SentinelGroup`]: a master, one replica and three sentinels that monitor
//! them with quorum 2, tuned to fail over within seconds.
//!
//! Invariants: [`SentinelGroup::start`] returns only once the replica's link
//! to the master is up and every sentinel knows the master, the replica and
//! the two other sentinels, so a failover can start as soon as the master
//! goes down. Every process, sentinels included, is a [`RedisServer`]: a
//! sentinel is the same `redis-server` binary run with its own writable
//! config file and `--sentinel`, through a two-line shell shim (redis insists
//! that the config file comes first on the command line, `RedisServer` puts
//! its port first). So sentinels get the kit's free-port choice, pid-checked
//! readiness, log file, pause and kill-on-drop for free, and a restarted
//! sentinel reloads the state it rewrote into its config file.
//!
//! Failover timing with the settings below (`down-after-milliseconds 1000`,
//! `failover-timeout 3000`): a stopped master is subjectively down after 1 s,
//! and the replica is promoted and reported by a majority of the sentinels
//! about 2.2 s after the stop on a loopback-only machine; a split leader
//! election would retry after `2 * failover-timeout` = 6 s, so allow ~15 s.

use std::{
    fmt,
    fs::{self, File},
    io::{self, Write as _},
    net::{IpAddr, SocketAddr},
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use super::{executable_of, info_field, start_parallel, Probe};
use crate::{poll_until, RedisServer};

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "leasehold-master";
/// Number of sentinels in a group.
pub const SENTINELS: usize = 3;
/// Sentinels that must agree that the master is down.
pub const QUORUM: usize = 2;
/// `sentinel down-after-milliseconds`.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);
/// `sentinel failover-timeout`.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_millis(3000);
/// How long [`SentinelGroup::start`] waits for replication and for the
/// sentinels to discover each other (they say hello every 2 s).
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts per sentinel: exec'ing a freshly written shim can fail with
/// ETXTBSY while another thread of the test process is forking.
const SHIM_START_ATTEMPTS: usize = 20;

/// A master, a replica and three sentinels; dropping the value kills and
/// reaps all five processes.
pub struct SentinelGroup {
    // Field order is drop order: sentinels die first, so they never see the
    // data servers vanish and start a failover during teardown.
    sentinels: Vec<RedisServer>,
    replica: RedisServer,
    master: RedisServer,
    /// Sentinel config files and shims; outlives the sentinel processes.
    conf_dir: tempfile::TempDir,
}

impl SentinelGroup {
    /// Starts the group and waits until it is ready to fail over.
    ///
    /// # Panics
    ///
    /// Where [`try_start`](Self::try_start) returns an error, with its message
    /// (which includes the logs).
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|error| panic!("cannot start a sentinel group: {error}"))
    }

    /// Starts the group and waits until it is ready to fail over: the
    /// replica's link is up and every sentinel knows the master, the replica
    /// and the other sentinels.
    ///
    /// # Errors
    ///
    /// If a process cannot be started, or the group does not form within
    /// 30 s; the message includes the logs of all processes started so far.
    pub fn try_start() -> io::Result<Self> {
        Self::try_start_with(None)
    }

    /// Like [`start`](Self::start), over TLS: the master and the replica replicate
    /// over TLS, the sentinels listen for TLS ([`RedisServer::tls_url`] of
    /// [`sentinels`](Self::sentinels)) and reach the servers over TLS, so they name the
    /// master by its TLS port. Every process presents `listener`'s certificate. The
    /// plain ports stay open for the kit's own checks.
    ///
    /// # Panics
    ///
    /// If the group does not form (the message includes the logs).
    pub fn start_tls(listener: crate::TlsListener) -> Self {
        Self::try_start_with(Some(listener))
            .unwrap_or_else(|error| panic!("cannot start a TLS sentinel group: {error}"))
    }

    fn try_start_with(tls: Option<crate::TlsListener>) -> io::Result<Self> {
        // Diskless sync by default in 7.0, but with a 5 s delay that waits for
        // more replicas; there is only one.
        let data_server = || {
            let b = RedisServer::builder().args(["--repl-diskless-sync-delay", "0"]);
            match &tls {
                Some(t) => b.tls(t.clone()).args(["--tls-replication", "yes"]),
                None => b,
            }
        };
        let master = data_server().try_start()?;
        // Over TLS, servers replicate through and announce their TLS ports.
        let data_port = |s: &RedisServer| s.tls_port().unwrap_or(s.port());
        let replica = data_server()
            .args(["--replicaof", "127.0.0.1"])
            .arg(data_port(&master).to_string())
            .try_start()?;
        wait_for_link(&master, &replica)?;

        let binary = executable_of(&master)?;
        let conf_dir = tempfile::Builder::new()
            .prefix("leasehold-sentinel-")
            .tempdir()?;
        let shims = (0..SENTINELS)
            .map(|i| write_sentinel_files(conf_dir.path(), i, &binary, data_port(&master)))
            .collect::<io::Result<Vec<_>>>()?;
        let sentinels = start_parallel(SENTINELS, |i| start_sentinel(&shims[i], tls.as_ref()))?;

        let group = Self {
            sentinels,
            replica,
            master,
            conf_dir,
        };
        group.wait_until_formed()?;
        Ok(group)
    }

    /// The name the sentinels monitor the master under, for sentinel clients.
    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    /// The address of every sentinel.
    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.sentinels.iter().map(RedisServer::addr).collect()
    }

    /// The URL of every sentinel (`redis://127.0.0.1:PORT/`).
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// The sentinel processes (e.g. for their logs).
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// Sentinel `i`, mutably (to stop or restart it; a restarted sentinel
    /// reloads its rewritten config file and rejoins the group).
    ///
    /// # Panics
    ///
    /// If `i >= 3`.
    pub fn sentinel_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.sentinels[i]
    }

    /// The server that was the master at start (it may have been demoted
    /// since).
    pub fn master(&self) -> &RedisServer {
        &self.master
    }

    /// The initial master, mutably (to stop or restart it). Restarted after
    /// a failover, it comes back empty as a master and the sentinels then
    /// turn it into a replica of the new master.
    pub fn master_mut(&mut self) -> &mut RedisServer {
        &mut self.master
    }

    /// The server that was the replica at start (it may have been promoted
    /// since). `replica().pause()` freezes it.
    pub fn replica(&self) -> &RedisServer {
        &self.replica
    }

    /// The initial replica, mutably (to stop or restart it). A restarted
    /// replica comes back as a replica of the initial master, from its
    /// command line.
    pub fn replica_mut(&mut self) -> &mut RedisServer {
        &mut self.replica
    }

    /// The master address that a majority (2 of 3) of the sentinels report
    /// via `SENTINEL GET-MASTER-ADDR-BY-NAME`, or `None` if no address has a
    /// majority among the sentinels that answer within 500 ms.
    pub fn current_master_addr(&self) -> Option<SocketAddr> {
        majority_master(&mut self.sentinel_probes())
    }

    /// Polls until a majority of the sentinels report a master other than
    /// `old` and that server itself reports `role:master`; returns its
    /// address.
    ///
    /// # Panics
    ///
    /// If that does not happen within `timeout`; the message includes what
    /// the sentinels report and the logs of all five processes.
    pub fn wait_for_failover(&self, old: SocketAddr, timeout: Duration) -> SocketAddr {
        let mut probes = self.sentinel_probes();
        let mut promoted = None;
        let done = poll_until(timeout, || {
            promoted = majority_master(&mut probes).filter(|&addr| addr != old);
            promoted.is_some_and(|addr| {
                let url = format!("redis://{addr}/");
                Probe::new(url)
                    .info("replication")
                    .is_ok_and(|info| info_field(&info, "role") == Some("master"))
            })
        });
        match promoted {
            Some(addr) if done => addr,
            _ => panic!(
                "no failover away from {old} within {timeout:?}: sentinels report {:?}, \
                 majority {promoted:?}{}",
                self.sentinel_reports(),
                self.logs()
            ),
        }
    }

    /// Waits until the replica has applied everything the master had written
    /// when the call began: reads the master's `master_repl_offset`, then
    /// polls the other server until it is a replica of that master with its
    /// link up and `slave_repl_offset` at least that far. "Master" is the
    /// server the sentinels currently report (the initial master if they do
    /// not agree), "replica" the other data server.
    ///
    /// # Panics
    ///
    /// If that does not happen within `timeout`; the message includes both
    /// servers' replication info and the logs.
    pub fn wait_for_replication(&self, timeout: Duration) {
        let (source, target) = match self.current_master_addr() {
            Some(addr) if addr == self.replica.addr() => (&self.replica, &self.master),
            _ => (&self.master, &self.replica),
        };
        let mut source_probe = Probe::new(source.url());
        let mut target_probe = Probe::new(target.url());
        let mut wanted: Option<u64> = None;
        let mut last = String::new();
        let done = poll_until(timeout, || {
            if wanted.is_none() {
                wanted = source_probe.info("replication").ok().and_then(|info| {
                    info_field(&info, "master_repl_offset").and_then(|v| v.parse().ok())
                });
            }
            let Some(wanted) = wanted else { return false };
            let Ok(info) = target_probe.info("replication") else {
                return false;
            };
            let caught_up = info_field(&info, "role") == Some("slave")
                && info_field(&info, "master_port") == Some(source.port().to_string().as_str())
                && info_field(&info, "master_link_status") == Some("up")
                && info_field(&info, "slave_repl_offset")
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|offset| offset >= wanted);
            last = info;
            caught_up
        });
        if !done {
            panic!(
                "replica on port {} did not catch up with master on port {} (offset {wanted:?}) \
                 within {timeout:?}; its last INFO replication:\n{last}{}",
                target.port(),
                source.port(),
                self.logs()
            );
        }
    }

    /// The log tails of the master, the replica and the sentinels, for panic
    /// messages.
    pub fn logs(&self) -> String {
        let data = [
            ("initial master".to_owned(), &self.master),
            ("initial replica".to_owned(), &self.replica),
        ];
        let sentinels = self
            .sentinels
            .iter()
            .enumerate()
            .map(|(i, sentinel)| (format!("sentinel {i}"), sentinel));
        super::logs(data.into_iter().chain(sentinels))
    }

    fn sentinel_probes(&self) -> Vec<Probe> {
        self.sentinels
            .iter()
            .map(|sentinel| Probe::new(sentinel.url()))
            .collect()
    }

    /// What each sentinel answers to `GET-MASTER-ADDR-BY-NAME`, for messages.
    fn sentinel_reports(&self) -> Vec<Result<Option<SocketAddr>, String>> {
        self.sentinel_probes()
            .iter_mut()
            .map(reported_master)
            .collect()
    }

    /// Polls until every sentinel sees the master as a master, the replica as
    /// a healthy replica and the two other sentinels.
    fn wait_until_formed(&self) -> io::Result<()> {
        let mut probes = self.sentinel_probes();
        let mut last = vec![String::from("not asked yet"); probes.len()];
        let replica_port = self
            .replica
            .tls_port()
            .unwrap_or(self.replica.port())
            .to_string();
        let formed = poll_until(FORM_TIMEOUT, || {
            probes.iter_mut().zip(&mut last).all(|(probe, last)| {
                match sentinel_view(probe, &replica_port) {
                    Ok(()) => true,
                    Err(why) => {
                        *last = why;
                        false
                    }
                }
            })
        });
        if formed {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the sentinels did not form a group within {FORM_TIMEOUT:?}; \
                 what each lacked: {last:?}; configs in {}{}",
                self.conf_dir.path().display(),
                self.logs()
            ),
        ))
    }
}

/// Waits until `replica` reports `master_link_status:up`.
fn wait_for_link(master: &RedisServer, replica: &RedisServer) -> io::Result<()> {
    let mut probe = Probe::new(replica.url());
    let up = poll_until(FORM_TIMEOUT, || {
        probe
            .info("replication")
            .is_ok_and(|info| info_field(&info, "master_link_status") == Some("up"))
    });
    if up {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "the replica on port {} did not connect to the master on port {} within {FORM_TIMEOUT:?}{}",
            replica.port(),
            master.port(),
            super::logs([
                ("master".to_owned(), master),
                ("replica".to_owned(), replica)
            ])
        ),
    ))
}

/// `Ok` if the sentinel behind `probe` knows the master, the replica on
/// `replica_port` and two other sentinels; else what it lacks.
fn sentinel_view(probe: &mut Probe, replica_port: &str) -> Result<(), String> {
    let master: std::collections::HashMap<String, String> =
        probe.query(redis::cmd("SENTINEL").arg("MASTER").arg(MASTER_NAME))?;
    let field = |name: &str| master.get(name).map_or("", String::as_str);
    if field("flags") != "master" {
        return Err(format!("master flags {:?}", field("flags")));
    }
    let others = (SENTINELS - 1).to_string();
    if field("num-other-sentinels") != others {
        return Err(format!(
            "num-other-sentinels {:?}",
            field("num-other-sentinels")
        ));
    }
    let replicas: Vec<std::collections::HashMap<String, String>> =
        probe.query(redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME))?;
    let healthy = replicas.iter().any(|replica| {
        replica.get("port").map(String::as_str) == Some(replica_port)
            && replica.get("flags").map(String::as_str) == Some("slave")
            && replica.get("master-link-status").map(String::as_str) == Some("ok")
    });
    if healthy {
        Ok(())
    } else {
        Err(format!(
            "no healthy replica on port {replica_port}: {replicas:?}"
        ))
    }
}

/// The master address that at least [`QUORUM`] sentinels report.
fn majority_master(probes: &mut [Probe]) -> Option<SocketAddr> {
    let reports: Vec<SocketAddr> = probes
        .iter_mut()
        .filter_map(|probe| reported_master(probe).ok().flatten())
        .collect();
    reports
        .iter()
        .copied()
        .find(|addr| reports.iter().filter(|other| *other == addr).count() >= QUORUM)
}

/// One sentinel's `SENTINEL GET-MASTER-ADDR-BY-NAME` answer.
fn reported_master(probe: &mut Probe) -> Result<Option<SocketAddr>, String> {
    let reply: Option<(String, u16)> = probe.query(
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME),
    )?;
    reply
        .map(|(ip, port)| {
            ip.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, port))
                .map_err(|error| format!("bad master ip {ip:?}: {error}"))
        })
        .transpose()
}

/// Writes sentinel `i`'s config file and the shim that runs `binary` on it in
/// sentinel mode; returns the shim's path.
fn write_sentinel_files(
    dir: &Path,
    i: usize,
    binary: &Path,
    master_port: u16,
) -> io::Result<PathBuf> {
    let conf = dir.join(format!("sentinel-{i}.conf"));
    let down_after = DOWN_AFTER.as_millis();
    let failover_timeout = FAILOVER_TIMEOUT.as_millis();
    fs::write(
        &conf,
        format!(
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}\n\
             sentinel down-after-milliseconds {MASTER_NAME} {down_after}\n\
             sentinel failover-timeout {MASTER_NAME} {failover_timeout}\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n\
             sentinel announce-ip 127.0.0.1\n\
             sentinel resolve-hostnames no\n"
        ),
    )?;
    let shim = dir.join(format!("sentinel-{i}.sh"));
    let mut text = b"#!/bin/sh\nexec ".to_vec();
    text.extend(shell_quote(binary));
    text.push(b' ');
    text.extend(shell_quote(&conf));
    text.extend(b" \"$@\" --sentinel\n");
    let mut file = File::create(&shim)?;
    file.write_all(&text)?;
    file.set_permissions(fs::Permissions::from_mode(0o755))?;
    file.sync_all()?;
    Ok(shim)
}

/// `path` in single quotes, for `/bin/sh`.
fn shell_quote(path: &Path) -> Vec<u8> {
    let mut out = vec![b'\''];
    for &byte in path.as_os_str().as_bytes() {
        if byte == b'\'' {
            out.extend(b"'\\''");
        } else {
            out.push(byte);
        }
    }
    out.push(b'\'');
    out
}

/// Starts one sentinel through its shim, retrying while the freshly written
/// shim is still briefly "busy" (ETXTBSY) because another thread forked.
fn start_sentinel(shim: &Path, tls: Option<&crate::TlsListener>) -> io::Result<RedisServer> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let builder = match tls {
            Some(t) => RedisServer::builder()
                .binary(shim)
                .tls(t.clone())
                .args(["--tls-replication", "yes"]),
            None => RedisServer::builder().binary(shim),
        };
        match builder.try_start() {
            Err(error)
                if error.kind() == io::ErrorKind::ExecutableFileBusy
                    && attempt < SHIM_START_ATTEMPTS =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

impl fmt::Debug for SentinelGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelGroup")
            .field("master_name", &MASTER_NAME)
            .field("master", &self.master)
            .field("replica", &self.replica)
            .field("sentinels", &self.sentinels)
            .field("conf_dir", &self.conf_dir.path())
            .finish()
    }
}
