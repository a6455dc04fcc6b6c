//! The `leasehold` command's implementation: thin glue over the library. The binary
//! (`main.rs`) only parses arguments and maps results to exit codes ([`exit`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
mod child;
pub mod exit;
pub mod guard;
pub mod logging;
pub mod main_shape;
mod observe;
mod run;
mod status;

/// How long the command waits for background releases before it exits.
pub const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The default Redis URL when neither `--redis` nor `REDIS_URL` is given.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/";

/// Run the parsed command line; returns the process exit code.
///
/// # Cancel safety
/// Cancelling drops the command's client: held locks are released in the background while the runtime lives and otherwise expire with their leases; a child command is killed (`kill_on_drop`).
pub async fn execute(cli: args::Cli) -> anyhow::Result<u8> {
    use args::Command;
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <args::Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "leasehold", &mut script);
            // A closed pipe (`| head`) is the reader's choice, not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            return Ok(exit::OK);
        }
        Command::Man => {
            let cmd = <args::Cli as clap::CommandFactory>::command();
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &page);
            return Ok(exit::OK);
        }
        _ => {}
    }
    let client = connect(&cli.target, cli.tls.config()).await?;
    let code = match cli.command {
        Command::Run(a) => run::run(&client, &a).await,
        Command::Elect(a) => run::elect(&client, &a).await,
        Command::Status { name, json } => {
            status::status(&client, &name, !cli.target.redlock, json).await
        }
        Command::List {
            pattern,
            limit,
            json,
        } => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            status::list(&client, &pattern, limit, !cli.target.redlock, json).await
        }
        Command::Observe { name, json } => observe::observe(&client, &name, json).await,
        Command::Release { name, force } => status::release(&client, &name, force).await,
        Command::Doctor { json } => status::doctor(&client, json).await,
        Command::Completions { .. } | Command::Man => {
            unreachable!("handled before connecting")
        }
    };
    // Background releases (of a grant whose outcome was unknown, say) get a short drain,
    // not their whole lease: a grant they cannot confirm expires by its TTL.
    let left = client.shutdown_within(SHUTDOWN_DRAIN).await;
    if left > 0 {
        eprintln!(
            "leasehold: {left} background release(s) still unconfirmed after {}; what they did not release expires with its lease",
            human(SHUTDOWN_DRAIN)
        );
    }
    code
}

/// A client for `target` (default [`DEFAULT_URL`]): one server, Sentinel, Cluster or
/// RedLock, with `REDIS_USERNAME` / `REDIS_PASSWORD` applied where the URLs carry no user
/// name / password and `tls` when given, checked with a `PING`.
///
/// # Cancel safety
/// Cancel-safe: only a `PING` is sent.
pub async fn connect(
    target: &args::TargetArgs,
    tls: Option<leasehold::TlsConfig>,
) -> anyhow::Result<leasehold::Client> {
    let (mut builder, shown, urls) = target_builder(target)?;
    let (mut has_user, mut has_password) = (false, false);
    for url in &urls {
        let (user, password) = url_credentials(url);
        has_user |= user;
        has_password |= password;
    }
    if let Ok(user) = std::env::var("REDIS_USERNAME") {
        if !has_user && !user.is_empty() {
            builder = builder.username(user);
        }
    }
    if let Ok(password) = std::env::var("REDIS_PASSWORD") {
        if !has_password {
            builder = builder.password(password);
        }
    }
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    if let Some(timeout) = target.response_timeout {
        builder = builder.response_timeout(timeout);
    }
    let client = builder.build()?;
    if let Err(e) = client.ping().await {
        let context = if e.is_tls() {
            format!("TLS connection to Redis at {shown} failed")
        } else if e.is_auth() {
            format!("Redis at {shown} refused to log in")
        } else {
            format!("cannot reach Redis at {shown}")
        };
        return Err(anyhow::Error::new(e).context(context));
    }
    Ok(client)
}

/// The client builder for `target`, how to name it in messages (no secrets), and the
/// URLs whose credentials count.
fn target_builder(
    target: &args::TargetArgs,
) -> anyhow::Result<(leasehold::ClientBuilder, String, Vec<String>)> {
    let redacted = |urls: &[String]| {
        urls.iter()
            .map(|u| leasehold::redact_url(u))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !target.sentinel.is_empty() {
        if !target.redis.is_empty() {
            return Err(exit::UsageError(
                "--redis and --sentinel: with --sentinel the master is found by name; give its credentials with REDIS_USERNAME / REDIS_PASSWORD".into(),
            )
            .into());
        }
        let name = target.master_name.clone().unwrap_or_default();
        let sentinels: Vec<String> = target
            .sentinel
            .iter()
            .map(|s| {
                if s.contains("://") {
                    s.clone()
                } else {
                    format!("redis://{s}/")
                }
            })
            .collect();
        let shown = format!("the master {name:?} of sentinels {}", redacted(&sentinels));
        let builder = leasehold::Client::sentinel_builder(sentinels.clone(), name);
        return Ok((builder, shown, Vec::new()));
    }
    let urls = if target.redis.is_empty() {
        vec![DEFAULT_URL.to_string()]
    } else {
        target.redis.clone()
    };
    let (builder, shown) = if target.cluster {
        (
            leasehold::Client::cluster_builder(urls.clone()),
            format!("the Redis Cluster of {}", redacted(&urls)),
        )
    } else if target.redlock {
        (
            leasehold::Client::redlock_builder(urls.clone()),
            format!("the RedLock masters {}", redacted(&urls)),
        )
    } else if urls.len() > 1 {
        return Err(exit::UsageError(format!(
            "{} --redis URLs: add --cluster (they are seed nodes of one cluster) or --redlock (each is an independent master)",
            urls.len()
        ))
        .into());
    } else {
        (leasehold::Client::builder(&urls[0]), redacted(&urls))
    };
    Ok((builder, shown, urls))
}

/// Whether `url` names a user and a password (a URL that does not parse names neither; the
/// client reports it).
fn url_credentials(url: &str) -> (bool, bool) {
    match url::Url::parse(url) {
        Ok(u) => (!u.username().is_empty(), u.password().is_some()),
        Err(_) => (false, false),
    }
}

/// A duration as people write it, to the millisecond ("1s 2ms", "250ms").
pub(crate) fn human(d: std::time::Duration) -> String {
    let ms = std::time::Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if ms.is_zero() {
        "0ms".to_string()
    } else {
        humantime::format_duration(ms).to_string()
    }
}
