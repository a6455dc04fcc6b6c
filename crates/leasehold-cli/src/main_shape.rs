//! The shape of a leasehold binary's `main`, shared by `leasehold` and `leasehold-lab`:
//! parse the command line (a usage error becomes one line and exit code 2), install the
//! log subscriber, run the command on a Tokio runtime, and map its result to a documented
//! exit code ([`crate::exit`]).

use std::future::Future;
use std::process::ExitCode;

/// Run `program`'s command line `C`: `logging` gives its `-v` count and whether the command
/// is quiet by default (errors only), `execute` runs it.
pub fn run_main<C, F, Fut>(
    program: &str,
    logging: impl Fn(&C) -> (u8, bool),
    execute: F,
) -> ExitCode
where
    C: clap::Parser,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<u8>>,
{
    let cli = match C::try_parse() {
        Ok(cli) => cli,
        // --help and --version print normally; a usage error becomes one line.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "{program}: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(crate::exit::USAGE);
        }
    };
    let (verbose, quiet) = logging(&cli);
    crate::logging::init(verbose, quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            return ExitCode::from(crate::exit::FAILURE);
        }
    };
    let code = match runtime.block_on(execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{program}: {}", crate::exit::one_line(&e));
            crate::exit::code_for(&e)
        }
    };
    ExitCode::from(code)
}
