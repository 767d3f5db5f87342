//! The `asoc` command (filled by later issues).

fn main() {
    eprintln!("asoc: no commands yet");
    std::process::exit(2);
}
