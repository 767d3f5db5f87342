//! `conformance`: the ASoc conformance suite's own binary.

fn main() {
    // SAFETY: the first thing the program does, while it has one thread:
    // nothing else reads or writes the environment meanwhile.
    #[allow(unsafe_code)]
    unsafe {
        asoc_secrets::take_from_environment(&["ASOC_API_KEY", "ASOC_MASTER_KEY"]);
    }
    std::process::exit(conformance::main_with_args(std::env::args().skip(1)));
}
