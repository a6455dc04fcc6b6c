//! The `leasehold-lab` binary: parse the command line, run the demo, bench or torture
//! command, map the result to the product's documented exit codes.

#![forbid(unsafe_code)]

use clap::Parser as _;
use leasehold_cli::exit;

fn main() -> std::process::ExitCode {
    let cli = match leasehold_lab::args::LabCli::try_parse() {
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
                "leasehold-lab: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return std::process::ExitCode::from(exit::USAGE);
        }
    };
    let quiet = matches!(cli.command, leasehold_lab::args::LabCommand::Demo(_));
    leasehold_cli::logging::init(cli.verbose, quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leasehold-lab: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(exit::FAILURE);
        }
    };
    let code = match runtime.block_on(leasehold_lab::execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leasehold-lab: {}", exit::one_line(&e));
            exit::code_for(&e)
        }
    };
    std::process::ExitCode::from(code)
}
