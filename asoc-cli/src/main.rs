//! The `asoc` command.

mod blocking;
mod demo;
mod os;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ASoc: authenticated tensor streaming between AI compute nodes.
#[derive(Parser)]
#[command(name = "asoc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Two nodes on loopback: authenticated handshake, then a SHA-256-verified
    /// tensor stream. Needs no set-up.
    Demo {
        /// Tensor size in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        /// Chunk (DATA frame payload) size in KiB.
        #[arg(long, default_value_t = 1024)]
        chunk_kib: usize,
    },
    /// Print a new 256-bit API key as 64 lower-case hex characters.
    Keygen,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo {
            size_mib,
            chunk_kib,
        } => {
            if chunk_kib == 0 || chunk_kib > 16 * 1024 {
                Err("--chunk-kib must be between 1 and 16384".to_string())
            } else {
                demo::run(size_mib << 20, chunk_kib << 10)
            }
        }
        Command::Keygen => keygen(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("asoc: {message}");
            ExitCode::from(1)
        }
    }
}

fn keygen() -> Result<(), String> {
    let seed = os::seed().map_err(|e| format!("no OS randomness: {e}"))?;
    let mut rng = asoc_proto::rng::Rng::from_seed(seed);
    let key = asoc_proto::auth::generate_key_hex(rng.inner());
    println!("{}", key.as_str());
    Ok(())
}
