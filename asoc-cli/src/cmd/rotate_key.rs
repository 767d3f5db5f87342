//! `asoc rotate-key`: asks a running `asoc listen --control PATH` to rotate
//! the cluster's key to the one in `--new-key-file`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use asoc_proto::auth::{estimated_bits, ApiKey, MIN_KEY_BITS};
use clap::Args;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::error::{CliError, CliResult};
use crate::units::parse_duration;

/// How long the node may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// `asoc rotate-key …`.
#[derive(Args, Debug)]
pub(crate) struct RotateKeyArgs {
    /// The node's control socket (`asoc listen --control PATH`).
    #[arg(long, value_name = "PATH")]
    pub(crate) control: PathBuf,
    /// The new key (mode 600; a trailing newline is stripped), for example
    /// from `asoc keygen`.
    #[arg(long, value_name = "PATH")]
    pub(crate) new_key_file: PathBuf,
    /// When the cluster starts signing with the new key, from now.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub(crate) activate_in: Duration,
    /// How long after activation the old key is still accepted (nodes that
    /// were down reconnect with it and learn the new one meanwhile).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub(crate) grace: Duration,
    /// DEVELOPMENT ONLY: accept a new key estimated below 128 bits.
    #[arg(long)]
    pub(crate) weak_key: bool,
    /// Print the answer as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs `asoc rotate-key`.
pub(crate) fn run(args: &RotateKeyArgs) -> CliResult {
    let shown = args.new_key_file.display().to_string();
    let bytes = asoc_secrets::read_private_file(&args.new_key_file)
        .map_err(|e| CliError::usage(e.to_string()))?;
    ApiKey::from_bytes(&bytes).map_err(|e| CliError::usage(format!("{shown}: {e}")))?;
    let bits = estimated_bits(&bytes);
    if bits < MIN_KEY_BITS && !args.weak_key {
        return Err(CliError::usage(format!(
            "{shown}: the new key is estimated at {bits} bits of entropy, below {MIN_KEY_BITS}; \
             generate one with `asoc keygen`, or pass --weak-key for development"
        )));
    }
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let key_hex = Zeroizing::new(crate::output::hex(&bytes));
    let request = Zeroizing::new(
        json!({"cmd": "rotate_key", "key_hex": key_hex.as_str(),
               "activate_in_ms": millis(args.activate_in), "grace_ms": millis(args.grace)})
        .to_string(),
    );
    let control = args.control.display();
    let mut stream = UnixStream::connect(&args.control)
        .map_err(|e| CliError::runtime(format!("cannot reach the node at {control}: {e}")))?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| writeln!(stream, "{}", request.as_str()))
        .map_err(|e| CliError::runtime(format!("{control}: {e}")))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| CliError::runtime(format!("{control}: no answer: {e}")))?;
    let answer: Value = serde_json::from_str(&line)
        .map_err(|e| CliError::runtime(format!("{control}: unreadable answer: {e}")))?;
    if answer["ok"] == true {
        let epoch = answer["epoch"].as_u64().unwrap_or(0);
        if args.json {
            println!("{}", json!({"event": "rotation_started", "epoch": epoch}));
        } else {
            println!(
                "key rotation {epoch} started: the new key signs in {:?}, the old one is \
                 accepted {:?} after that",
                args.activate_in, args.grace
            );
        }
        Ok(())
    } else {
        Err(CliError::runtime(format!(
            "the node refused the rotation: {}",
            answer["error"].as_str().unwrap_or("no reason given")
        )))
    }
}
