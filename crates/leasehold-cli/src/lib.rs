//! The `leasehold` command's implementation: thin glue over the library. The binary
//! (`main.rs`) only parses arguments and maps results to exit codes ([`exit`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
mod child;
pub mod exit;
pub mod logging;
pub mod main_shape;
mod run;
mod status;

/// The default Redis URL when neither `--redis` nor `REDIS_URL` is given.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/";

/// Run the parsed command line; returns the process exit code.
///
/// # Cancel safety
/// Cancelling drops the command's client: held locks are released in the background while the runtime lives and otherwise expire with their leases; a child command is killed (`kill_on_drop`).
pub async fn execute(cli: args::Cli) -> anyhow::Result<u8> {
    use args::Command;
    let client = connect(cli.redis.as_deref(), cli.tls.config()).await?;
    let code = match cli.command {
        Command::Run(a) => run::run(&client, &a).await,
        Command::Elect(a) => run::elect(&client, &a).await,
        Command::Status { name, json } => status::status(&client, &name, json).await,
        Command::List { pattern, json } => status::list(&client, &pattern, json).await,
        Command::Release { name, force } => status::release(&client, &name, force).await,
    };
    client.shutdown().await;
    code
}

/// A client for `url` (default [`DEFAULT_URL`]), with `REDIS_USERNAME` / `REDIS_PASSWORD`
/// applied where the URL carries no user name / password and `tls` when given, checked
/// with a `PING`.
///
/// # Cancel safety
/// Cancel-safe: only a `PING` is sent.
pub async fn connect(
    url: Option<&str>,
    tls: Option<leasehold::TlsConfig>,
) -> anyhow::Result<leasehold::Client> {
    let url = url.unwrap_or(DEFAULT_URL);
    let shown = leasehold::redact_url(url);
    let mut builder = leasehold::Client::builder(url);
    let (has_user, has_password) = url_credentials(url);
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

/// Whether `url` names a user and a password (a URL that does not parse names neither; the
/// client reports it).
fn url_credentials(url: &str) -> (bool, bool) {
    match url::Url::parse(url) {
        Ok(u) => (!u.username().is_empty(), u.password().is_some()),
        Err(_) => (false, false),
    }
}
