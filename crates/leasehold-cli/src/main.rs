//! The `leasehold` binary: parse the command line, run the command, map the result to a
//! documented exit code. Everything else lives in the `leasehold_cli` library.

#![forbid(unsafe_code)]

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = match leasehold_cli::args::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print normally; a usage error becomes one line.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "leasehold: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return std::process::ExitCode::from(leasehold_cli::exit::USAGE);
        }
    };
    leasehold_cli::logging::init(cli.verbose, false);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leasehold: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(leasehold_cli::exit::FAILURE);
        }
    };
    let code = match runtime.block_on(leasehold_cli::execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leasehold: {}", leasehold_cli::exit::one_line(&e));
            leasehold_cli::exit::code_for(&e)
        }
    };
    std::process::ExitCode::from(code)
}
