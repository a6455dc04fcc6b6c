//! `-v` turns on tracing output on stderr (`-v` info, `-vv` debug, `-vvv` trace);
//! `RUST_LOG` overrides. Credentials never reach these events: leasehold logs lock names
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
