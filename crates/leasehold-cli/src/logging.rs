//! `-v` turns on tracing output on stderr (`-v` info, `-vv` debug, `-vvv` trace);
//! `RUST_LOG` overrides. Colour only when stderr is a terminal and `NO_COLOR` is unset. Credentials never reach these events: leasehold logs lock names
//! and outcomes only, and URLs are redacted.

/// Install the subscriber for `verbosity` (count of `-v`); `quiet` raises the default
/// to errors only (the demo provokes warnings on purpose).
pub fn init(verbosity: u8, quiet: bool) {
    let level = match verbosity {
        0 if quiet => "error",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour only for a terminal (cron logs and pipes get plain text), and never with
    // NO_COLOR set (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
