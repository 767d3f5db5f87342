//! `conformance`: the ASoc conformance suite's own binary.

fn main() {
    std::process::exit(conformance::main_with_args(std::env::args().skip(1)));
}
