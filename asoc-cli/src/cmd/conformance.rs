//! `asoc conformance`: the conformance suite's command line (live server
//! and client modes), run in this process by the `conformance` crate. Its
//! exit codes are the suite's: 0 nothing unexpected, 1 unexpected results,
//! 2 usage error or unreachable target.

use std::process::ExitCode;

use crate::cli::ConformanceArgs;

pub(crate) fn run(args: ConformanceArgs) -> ExitCode {
    let code = conformance::main_named("asoc conformance", args.args);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
