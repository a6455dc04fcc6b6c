//! Finding, spawning and probing one `redis-server` process.
//!
//! Invariants: the process listens only on `127.0.0.1`, persists nothing
//! (`--save ""`, `--appendonly no`), and keeps its log and its stdout/stderr
//! inside the owner's temporary directory. "Ready" means a probe on the port
//! reached *this* process (its `INFO server` reports our child's pid), so a
//! stranger that grabbed the port can never be mistaken for our server. A
//! process that does not become ready before the deadline is killed and reaped
//! before the error is returned.

use std::{
    env,
    ffi::OsStr,
    fs, io,
    net::{Ipv4Addr, TcpListener},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::text::{redis_url, tail, LOG_TAIL_LINES};

/// Environment variable naming the `redis-server` binary to run.
pub(crate) const BINARY_ENV: &str = "LEASEHOLD_REDIS_SERVER";
/// How long a server may take to answer its first probe.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two readiness probes.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Upper bound on probes per start, on top of the deadline.
const MAX_POLLS: u32 = 2_000;
/// Connect, read and write timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
/// Fresh ports tried when another process takes the port we picked.
pub(crate) const FRESH_PORT_ATTEMPTS: usize = 5;
const LOG_FILE: &str = "redis.log";
const STDOUT_FILE: &str = "stdout.log";

/// Everything needed to (re)start a server, resolved once by the builder.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) binary: PathBuf,
    pub(crate) password: Option<String>,
    pub(crate) user: Option<(String, String)>,
    pub(crate) args: Vec<String>,
    /// A TLS listener beside the plain port, and its port once one was picked.
    pub(crate) tls: Option<(crate::server::TlsListener, u16)>,
}

impl Settings {
    /// The user name clients authenticate with, if any.
    pub(crate) fn username(&self) -> Option<&str> {
        self.user.as_ref().map(|(user, _)| user.as_str())
    }

    /// The password clients authenticate with, if any: the ACL user's when one
    /// is configured, else `requirepass`.
    pub(crate) fn password(&self) -> Option<&str> {
        match (&self.user, &self.password) {
            (Some((_, password)), _) => Some(password),
            (None, password) => password.as_deref(),
        }
    }

    /// URL with credentials for a server on `port`.
    pub(crate) fn url(&self, port: u16) -> String {
        redis_url(port, self.username(), self.password())
    }
}

/// Why one start attempt failed.
pub(crate) enum StartError {
    /// The server exited because its port was taken; another port (or a later
    /// attempt on the same port) may work.
    PortInUse,
    /// Any other failure; the message includes the log tail.
    Failed(io::Error),
}

/// Resolves the binary: `explicit`, else `$LEASEHOLD_REDIS_SERVER` (a path,
/// or a name looked up in `PATH`), else `redis-server` from `PATH`.
pub(crate) fn find_binary(explicit: Option<&Path>) -> io::Result<PathBuf> {
    if let Some(path) = explicit {
        return if is_executable(path) {
            Ok(path.to_path_buf())
        } else {
            Err(not_found(format!(
                "redis-server binary {} does not exist or is not executable",
                path.display()
            )))
        };
    }
    match env::var_os(BINARY_ENV).filter(|value| !value.is_empty()) {
        Some(value) => {
            let path = PathBuf::from(&value);
            let found = if path.components().count() > 1 {
                Some(path).filter(|path| is_executable(path))
            } else {
                search_path(&value)
            };
            found.ok_or_else(|| {
                not_found(format!(
                    "{BINARY_ENV}={} does not name an executable redis-server",
                    value.to_string_lossy()
                ))
            })
        }
        None => search_path(OsStr::new("redis-server"))
            .ok_or_else(|| not_found("redis-server was not found in PATH".to_owned())),
    }
}

fn not_found(detail: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "{detail}. Install it with `apt-get install -y redis-server` \
             (Debian/Ubuntu), or set {BINARY_ENV} to the path of a redis-server binary"
        ),
    )
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn search_path(name: &OsStr) -> Option<PathBuf> {
    let paths = env::var_os("PATH")?;
    env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// A port that was free a moment ago: bind `127.0.0.1:0`, read, release.
pub(crate) fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Spawns a server on `port` and waits until it is ready or `deadline`.
pub(crate) fn start_once(
    settings: &Settings,
    dir: &Path,
    port: u16,
    deadline: Instant,
) -> Result<Child, StartError> {
    let log_offset = fs::metadata(dir.join(LOG_FILE)).map_or(0, |meta| meta.len());
    let mut child = spawn(settings, dir, port).map_err(StartError::Failed)?;
    match wait_ready(&mut child, settings, dir, port, log_offset, deadline) {
        Ok(()) => Ok(child),
        Err(error) => {
            kill_and_reap(&mut child);
            Err(error)
        }
    }
}

fn spawn(settings: &Settings, dir: &Path, port: u16) -> io::Result<Child> {
    let output = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(STDOUT_FILE))?;
    let mut command = Command::new(&settings.binary);
    command
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--dir"])
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(LOG_FILE));
    if let Some(password) = &settings.password {
        command.arg("--requirepass").arg(password);
    }
    if let Some((user, password)) = &settings.user {
        command
            .args(["--user", user, "on"])
            .arg(format!(">{password}"))
            .args(["~*", "&*", "+@all"]);
    }
    if let Some((tls, tls_port)) = &settings.tls {
        command
            .arg("--tls-port")
            .arg(tls_port.to_string())
            .arg("--tls-cert-file")
            .arg(&tls.cert)
            .arg("--tls-key-file")
            .arg(&tls.key)
            .arg("--tls-ca-cert-file")
            .arg(&tls.ca)
            .arg("--tls-auth-clients")
            .arg(if tls.require_client_cert { "yes" } else { "no" });
    }
    command
        .args(&settings.args)
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output);
    command.spawn().map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot run {}: {error}", settings.binary.display()),
        )
    })
}

fn wait_ready(
    child: &mut Child,
    settings: &Settings,
    dir: &Path,
    port: u16,
    log_offset: u64,
    deadline: Instant,
) -> Result<(), StartError> {
    let url = settings.url(port);
    let pid = child.id();
    let mut last_error = String::from("no probe finished");
    for _ in 0..MAX_POLLS {
        if let Some(status) = child.try_wait().map_err(StartError::Failed)? {
            let log = read_file(dir, LOG_FILE);
            let new_part = log
                .get(usize::try_from(log_offset).unwrap_or(0)..)
                .unwrap_or("");
            if new_part.contains("Address already in use") {
                return Err(StartError::PortInUse);
            }
            return Err(StartError::Failed(io::Error::other(format!(
                "redis-server (pid {pid}, port {port}) exited with {status} before it was ready\n{}",
                diagnostics(dir)
            ))));
        }
        match probe(&url, pid) {
            Ok(()) => return Ok(()),
            Err(error) => last_error = error,
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Err(StartError::Failed(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "redis-server (pid {pid}, port {port}) did not become ready within {READY_TIMEOUT:?}; \
             last probe error: {last_error}\n{}",
            diagnostics(dir)
        ),
    )))
}

/// One readiness probe: `INFO server` answered by the process `pid`.
fn probe(url: &str, pid: u32) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|error| error.to_string())?;
    let mut con = client
        .get_connection_with_timeout(PROBE_TIMEOUT)
        .map_err(|error| error.to_string())?;
    con.set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| con.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|error| error.to_string())?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut con)
        .map_err(|error| error.to_string())?;
    let served_by = info
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|value| value.trim().parse::<u32>().ok());
    if served_by == Some(pid) {
        Ok(())
    } else {
        Err(format!(
            "the port is served by another process (process_id {served_by:?}, ours {pid})"
        ))
    }
}

/// SIGKILL (no persistence, so nothing to flush) and reap; errors are ignored
/// because the child may already have exited.
pub(crate) fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The server's log file, lossily decoded; empty if it does not exist yet.
pub(crate) fn read_log(dir: &Path) -> String {
    read_file(dir, LOG_FILE)
}

fn read_file(dir: &Path, name: &str) -> String {
    fs::read(dir.join(name))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The tails of the log and of stdout/stderr, for error and panic messages.
pub(crate) fn diagnostics(dir: &Path) -> String {
    let log = read_file(dir, LOG_FILE);
    let mut text = format!(
        "--- last {LOG_TAIL_LINES} lines of {} ---\n{}",
        dir.join(LOG_FILE).display(),
        tail(&log, LOG_TAIL_LINES)
    );
    let output = read_file(dir, STDOUT_FILE);
    if !output.trim().is_empty() {
        text.push_str(&format!(
            "\n--- last {LOG_TAIL_LINES} lines of redis-server stdout/stderr ---\n{}",
            tail(&output, LOG_TAIL_LINES)
        ));
    }
    text
}
