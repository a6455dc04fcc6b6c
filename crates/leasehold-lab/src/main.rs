//! The `leasehold-lab` binary: parse the command line, run the demo, bench or torture
//! command, map the result to the product's documented exit codes.

#![forbid(unsafe_code)]

use leasehold_lab::args::{LabCli, LabCommand};

fn main() -> std::process::ExitCode {
    leasehold_cli::main_shape::run_main(
        "leasehold-lab",
        // The demo provokes warnings on purpose: errors only, unless -v.
        |cli: &LabCli| (cli.verbose, matches!(cli.command, LabCommand::Demo(_))),
        leasehold_lab::execute,
    )
}
