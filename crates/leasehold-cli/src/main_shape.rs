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
            eprintln!("{program}: {} (see --help)", usage_line(&e.to_string()));
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

/// Make a panic anywhere — in any thread or task — end the process at once with exit
/// code [`crate::exit::PANIC`], after the usual panic message. A runtime would otherwise
/// swallow a panicking task and keep the process alive with part of it dead; for a
/// supervisor, ending is the safe failure: the guard sees its socket close and kills the
/// command's group, and the lease expires by its TTL. For the `leasehold` command only:
/// the exit skips destructors, which the lab needs to stop the servers it started.
pub fn fatal_panics(program: &str) {
    let program = program.to_string();
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("{program}: internal error (a bug, please report it); stopping at once");
        std::process::exit(i32::from(crate::exit::PANIC));
    }));
}

/// clap's usage error on one line: the message and what it lists (a missing argument's
/// name, a tip), without the usage synopsis.
fn usage_line(text: &str) -> String {
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty())
        .collect();
    let line = parts.join(" ");
    let line = line.trim_start_matches("error: ").to_string();
    if line.is_empty() {
        "invalid arguments".to_string()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::usage_line;

    #[test]
    fn a_missing_argument_is_named_on_the_one_line() {
        let clap_text = "error: the following required arguments were not provided:\n  --key <FILE>\n\nUsage: leasehold --cert <FILE> --key <FILE> status <NAME>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_line(clap_text),
            "the following required arguments were not provided: --key <FILE>"
        );
        assert_eq!(
            usage_line("error: unexpected argument '--x' found\n\n  tip: to pass '--x' as a value, use '-- --x'\n\nUsage: leasehold run\n"),
            "unexpected argument '--x' found tip: to pass '--x' as a value, use '-- --x'"
        );
    }
}
