//! The lab's command line: `demo`, `bench` and `torture`, with the product CLI's global
//! `--redis` and `-v` options.

use clap::{Args, Parser, Subcommand};

/// leasehold's lab: the demo, the benchmark and the torture suite.
#[derive(Debug, Parser)]
#[command(name = "leasehold-lab", version, after_help = leasehold_cli::exit::TABLE)]
pub struct LabCli {
    /// Redis URL, like redis://user:password@host:6379/0. The password may also come from
    /// REDIS_PASSWORD. Default: a private redis-server started for the run.
    #[arg(
        long = "redis",
        env = "REDIS_URL",
        global = true,
        hide_env_values = true
    )]
    pub redis: Option<String>,

    /// More output on stderr (-v, -vv, -vvv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// The command.
    #[command(subcommand)]
    pub command: LabCommand,
}

/// The lab's commands.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Measure leasehold against raw Redis round trips and the rslock crate.
    Bench(BenchArgs),
    /// A short, visible tour: contention, faults, and a naive lock failing beside leasehold.
    Demo(DemoArgs),
    /// Fault scenarios against leasehold and naive locks, judged by a history checker.
    Torture(TortureArgs),
}

/// `leasehold-lab torture`.
#[derive(Debug, Args)]
pub struct TortureArgs {
    /// Seconds per scenario and lock.
    #[arg(long, default_value_t = 3)]
    pub secs: u64,
    /// Scenarios to run (default: all; repeat the flag for several).
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<crate::torture::Scenario>,
    /// Locks to run (default: all; repeat the flag for several).
    #[arg(long = "lock", value_enum)]
    pub locks: Vec<crate::torture::LockKind>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `leasehold-lab bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 1)]
    pub secs: u64,
    /// Rounds per measurement (medians are reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Leases held for the renewal measurement.
    #[arg(long, default_value_t = 100_000)]
    pub leases: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run only these measurements (letters of the table: a, b, c, d, e, f), e.g. `ab`.
    #[arg(long, value_name = "LETTERS", value_parser = parse_sections)]
    pub only: Option<String>,
}

fn parse_sections(s: &str) -> Result<String, String> {
    let s: String = s.chars().filter(|c| !matches!(c, ',' | ' ')).collect();
    match s.chars().find(|c| !"abcdef".contains(*c)) {
        Some(c) => Err(format!(
            "unknown measurement {c:?}: use letters of a, b, c, d, e, f"
        )),
        None if s.is_empty() => Err("name at least one measurement (a to f)".to_string()),
        None => Ok(s),
    }
}

impl BenchArgs {
    /// Whether measurement `letter` runs.
    pub fn wants(&self, letter: char) -> bool {
        self.only.as_deref().is_none_or(|s| s.contains(letter))
    }
}

/// `leasehold-lab demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Workers contending for the demo lock.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
}
