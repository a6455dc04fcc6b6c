//! The command line.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 500ms, 30s, 2m)"))?;
    Ok(d)
}

/// Distributed locks on Redis, from the shell.
#[derive(Debug, Parser)]
#[command(name = "leasehold", version, after_help = crate::exit::TABLE)]
pub struct Cli {
    /// Where Redis is (one server, Sentinel, Cluster or RedLock).
    #[command(flatten)]
    pub target: TargetArgs,

    /// TLS settings (redis-cli's flags).
    #[command(flatten)]
    pub tls: TlsArgs,

    /// More output on stderr (-v, -vv, -vvv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Where Redis is. One `--redis` URL is one server; several need `--cluster` (they are seed
/// nodes) or `--redlock` (each is an independent master); `--sentinel` finds the master
/// that the sentinels name `--master-name`.
#[derive(Debug, Default, Args)]
pub struct TargetArgs {
    /// Redis URL, like redis://user:password@host:6379/0 (rediss:// for TLS); repeat it
    /// for --cluster and --redlock. User name and password may also come from
    /// REDIS_USERNAME / REDIS_PASSWORD. Default: redis://127.0.0.1:6379/
    #[arg(
        long = "redis",
        value_name = "URL",
        env = "REDIS_URL",
        value_delimiter = ',',
        global = true,
        hide_env_values = true
    )]
    pub redis: Vec<String>,
    /// A sentinel, as HOST:PORT or a redis:// URL (repeatable); needs --master-name.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "LEASEHOLD_SENTINEL",
        value_delimiter = ',',
        global = true,
        requires = "master_name",
        conflicts_with_all = ["cluster", "redlock"]
    )]
    pub sentinel: Vec<String>,
    /// The master's name in the sentinels' configuration.
    #[arg(
        long,
        value_name = "NAME",
        env = "LEASEHOLD_MASTER_NAME",
        global = true,
        requires = "sentinel"
    )]
    pub master_name: Option<String>,
    /// The --redis URLs are seed nodes of a Redis Cluster.
    #[arg(long, global = true, env = "LEASEHOLD_CLUSTER", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, num_args = 0, default_missing_value = "true", conflicts_with = "redlock")]
    pub cluster: bool,
    /// Each --redis URL is an independent master, locked by quorum (RedLock).
    #[arg(long, global = true, env = "LEASEHOLD_REDLOCK", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, num_args = 0, default_missing_value = "true")]
    pub redlock: bool,
    /// How long to wait for each Redis reply before its outcome counts as unknown (default
    /// 1s). A lease is renewed every third of its TTL, so --ttl must be at least about 1.6
    /// times this.
    #[arg(
        long,
        value_name = "DURATION",
        env = "LEASEHOLD_RESPONSE_TIMEOUT",
        global = true,
        value_parser = duration
    )]
    pub response_timeout: Option<Duration>,
}

/// TLS, as redis-cli spells it. Any of these turns TLS on, for every server the command
/// talks to; a `rediss://` URL does too.
#[derive(Debug, Default, Args)]
pub struct TlsArgs {
    /// Connect with TLS (trusting the platform's certificate store unless --cacert).
    #[arg(long, global = true, env = "LEASEHOLD_TLS", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, hide_env_values = true, num_args = 0, default_missing_value = "true")]
    pub tls: bool,
    /// Trust the CA certificates (PEM) in FILE instead of the platform's store.
    #[arg(long, global = true, value_name = "FILE", env = "LEASEHOLD_TLS_CACERT")]
    pub cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "LEASEHOLD_TLS_CERT",
        requires = "key"
    )]
    pub cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of the client certificate; needs --cert.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "LEASEHOLD_TLS_KEY",
        requires = "cert"
    )]
    pub key: Option<std::path::PathBuf>,
    /// Development only: accept any server certificate (warns on every connection).
    #[arg(long, global = true, env = "LEASEHOLD_TLS_INSECURE", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, hide_env_values = true, num_args = 0, default_missing_value = "true")]
    pub insecure: bool,
}

impl TlsArgs {
    /// The library's TLS settings, if any flag asks for TLS.
    pub fn config(&self) -> Option<leasehold::TlsConfig> {
        if !(self.tls || self.cacert.is_some() || self.cert.is_some() || self.insecure) {
            return None;
        }
        let mut config = leasehold::TlsConfig::new().insecure(self.insecure);
        if let Some(ca) = &self.cacert {
            config = config.ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config = config.client_cert_files(cert, key);
        }
        Some(config)
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command while holding a lock (or several, all or none), like flock(1) across
    /// machines.
    #[command(after_help = crate::exit::TABLE)]
    Run(RunArgs),
    /// Run a command only while leader; campaign again when leadership is lost.
    #[command(after_help = crate::exit::TABLE)]
    Elect(ElectArgs),
    /// Show who holds a lock, and the semaphore and read-write lock of the same name.
    Status {
        /// The name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List held locks, semaphores and read-write locks whose name matches a pattern
    /// (SCAN, never KEYS).
    List {
        /// A glob on names (*, ?, [...]).
        #[arg(default_value = "*")]
        pattern: String,
        /// List at most this many names; says so on stderr when more match.
        #[arg(long, value_name = "N", default_value_t = leasehold::LIST_LIMIT as u32,
              value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Watch an election without campaigning: print the leader now, then each change (a
    /// new leader, a new value, no leader), one per line, until interrupted.
    Observe {
        /// The election's name.
        name: String,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Operator override: remove a lock whoever holds it, and wake its waiters.
    Release {
        /// The lock's name.
        name: String,
        /// Required: removing a lock breaks its holder's mutual exclusion.
        #[arg(long)]
        force: bool,
    },
    /// Check the server settings that can break a lock (eviction, persistence, ACL
    /// permissions, pub/sub, cluster state, version), on every server; exit 8 if any is
    /// unsafe.
    #[command(after_help = crate::exit::TABLE)]
    Doctor {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell); see the
    /// README for where to put it.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `leasehold man > /usr/local/share/man/man1/leasehold.1`.
    Man,
}

/// The guard process's command line (`leasehold __guard …`, see the `guard` module), set
/// by `run` and `elect`. Parsed on its own, before the user's command line, so it appears
/// in no help, completion script or man page.
#[derive(Debug, Parser)]
#[command(name = "leasehold __guard")]
pub struct GuardArgs {
    /// The holding process's socket.
    #[arg(long)]
    pub socket: std::path::PathBuf,
    /// The first deadline, CLOCK_MONOTONIC nanoseconds.
    #[arg(long)]
    pub deadline_ns: u128,
    /// SIGTERM-to-SIGKILL grace, in milliseconds.
    #[arg(long)]
    pub grace_ms: u64,
    /// The command.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// What to do with the command when the lease is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnLostAction {
    /// SIGTERM, then SIGKILL after --grace.
    Term,
    /// SIGKILL at once.
    Kill,
    /// Let it run (leasehold still exits with code 4).
    Ignore,
}

/// `leasehold run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The lock's name; with several, all of them are held (taken in one canonical order, so
    /// runs naming the same locks in any order never deadlock), or none.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Lease length, renewed every third of it while the command runs.
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub ttl: Duration,
    /// How long to wait for the lock.
    #[arg(long, value_parser = duration, default_value = "10s", conflicts_with = "no_wait")]
    pub wait: Duration,
    /// Do not wait: exit with code 3 if the lock is held.
    #[arg(long)]
    pub no_wait: bool,
    /// Fair lock: waiters (in every process) get the lock strictly in arrival order.
    #[arg(long)]
    pub fair: bool,
    /// With --fair: how long a waiter's place survives without a refresh; a waiter that
    /// dies is skipped after at most this long (plus a third of it).
    #[arg(long, value_parser = duration, default_value = "3s", requires = "fair")]
    pub place_ttl: Duration,
    /// A label stored with the lock (shown by `status` and `list`).
    #[arg(long)]
    pub label: Option<String>,
    /// What to do with the command if the lease is lost.
    #[arg(long, value_enum, default_value = "term")]
    pub on_lost: OnLostAction,
    /// With --on-lost term: how long to wait after SIGTERM before SIGKILL (never past the
    /// moment another holder could be granted the lock).
    #[arg(long, value_parser = duration, default_value = "5s")]
    pub grace: Duration,
    /// The command and its arguments (after --).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `leasehold elect`.
#[derive(Debug, Args)]
pub struct ElectArgs {
    /// The election's name.
    pub name: String,
    /// Leadership lease, renewed every third of it; a dead leader is replaced within it.
    #[arg(long, value_parser = duration, default_value = "15s")]
    pub ttl: Duration,
    /// A label stored with the leadership.
    #[arg(long)]
    pub label: Option<String>,
    /// A value published with the leadership, for `leasehold observe` and `status`
    /// (etcdctl elect's proposal; at most 4096 bytes). The command sees it as
    /// LEASEHOLD_LEADER_VALUE.
    #[arg(long, value_name = "V")]
    pub value: Option<String>,
    /// Exit (code 4) when leadership is lost instead of campaigning again.
    #[arg(long)]
    pub once: bool,
    /// How long to wait after SIGTERM before SIGKILL when leadership is lost.
    #[arg(long, value_parser = duration, default_value = "5s")]
    pub grace: Duration,
    /// The command and its arguments (after --).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}
