//! The `asoc` command: keys, nodes, transfers and a demo on any of the
//! async runtimes ASoc has an adapter for.

mod audit;
mod cli;
mod cmd;
mod error;
mod events;
mod metrics;
mod net_errors;
mod os;
mod output;
mod peers_from;
mod progress;
mod reader;
mod runtime;
mod secrets;
mod signals;
mod sink;
mod tls;
mod units;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use cli::{Cli, Command};
use error::CliResult;

fn main() -> ExitCode {
    // Before anything else, while this is the only thread.
    secrets::take_from_environment();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_exit(&e),
    };
    if let Command::Conformance(args) = cli.command {
        return cmd::conformance::run(args);
    }
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("asoc: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn dispatch(command: Command) -> CliResult {
    match command {
        Command::Keygen => cmd::keygen::run(),
        Command::DeriveKey(args) => cmd::derive_key::run(&args),
        Command::Listen(args) => {
            let job = cmd::listen::Listen::prepare(*args)?;
            runtime::run(job.runtime(), job)
        }
        Command::Send(args) => {
            let job = cmd::send::Send::prepare(args)?;
            runtime::run(job.runtime(), job)
        }
        Command::Discover(args) => {
            let job = cmd::discover::Discover::prepare(args)?;
            runtime::run(job.runtime(), job)
        }
        Command::Demo(args) => {
            let job = cmd::demo::Demo::prepare(&args)?;
            runtime::run(job.runtime(), job)
        }
        Command::Bench(args) => cmd::bench::run(&args),
        Command::RotateKey(args) => cmd::rotate_key::run(&args),
        Command::PlainSend(args) => cmd::bench::plain_send(&args),
        Command::PlainReceive(args) => cmd::bench::plain_receive(&args),
        Command::Conformance(_) => unreachable!("handled in main"),
    }
}

/// Help and version go to stdout with exit 0; every other parse failure is
/// one line on stderr and exit 2.
fn usage_exit(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            let rendered = e.render().to_string();
            let summary: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let line = summary.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("asoc: {line} (see `asoc --help`)");
            ExitCode::from(2)
        }
    }
}
