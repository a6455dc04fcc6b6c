//! The `leasehold` binary: parse the command line, run the command, map the result to a
//! documented exit code. Everything else lives in the `leasehold_cli` library.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    if let Some(code) = leasehold_cli::guard::main_if_guard() {
        return code;
    }
    leasehold_cli::main_shape::fatal_panics("leasehold");
    leasehold_cli::main_shape::run_main(
        "leasehold",
        |cli: &leasehold_cli::args::Cli| (cli.verbose, false),
        leasehold_cli::execute,
    )
}
