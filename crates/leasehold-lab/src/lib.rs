//! leasehold's lab, apart from the product: the demo (`scripts/demo`), the benchmark that
//! compares leasehold with rslock, plain redis-rs commands and raw round trips, and the
//! torture suite that runs fault scenarios against leasehold and the naive locks of the
//! incident reports. It owns real server processes through the test kit, which the
//! product CLI never depends on. The binary (`main.rs`) only parses arguments and maps
//! results to the product's exit codes.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
pub mod bench;
pub mod demo;
pub mod torture;

/// Run the parsed lab command line; returns the process exit code.
///
/// # Cancel safety
/// Cancelling drops the servers and clients the command started: their processes are
/// killed and held locks expire with their leases.
pub async fn execute(cli: args::LabCli) -> anyhow::Result<u8> {
    use args::LabCommand;
    match cli.command {
        LabCommand::Demo(demo) => demo::run(cli.redis.as_deref(), &demo).await,
        LabCommand::Bench(bench) => bench::run(cli.redis.as_deref(), &bench).await,
        LabCommand::Torture(_) if cli.redis.is_some() => Err(leasehold_cli::exit::UsageError(
            "torture starts, pauses, kills and restarts its own redis-server processes: it cannot use --redis (or REDIS_URL)".into(),
        )
        .into()),
        LabCommand::Torture(t) => torture::command(&t.scenarios, &t.locks, t.secs, t.json).await,
    }
}
