//! The conformance command line and the suite's self-check, one test binary.
//! The suite run in-process on every adapter (`inprocess.rs`) is a
//! libtest-mimic harness of its own.

mod cli;
mod self_check;
mod self_check_judging;
mod self_check_v2;
mod sloppy;
mod v2ref;
