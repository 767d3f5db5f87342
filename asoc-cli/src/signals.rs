//! SIGINT and SIGTERM as an async message, on any runtime: a thread waits
//! for the signal and sends it on a channel. A second signal exits at once.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::{CliError, CliResult};

/// Installs the handlers; the receiver gets the first signal's number.
pub(crate) fn termination() -> CliResult<async_channel::Receiver<i32>> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| CliError::runtime(format!("cannot install signal handlers: {e}")))?;
    let (tx, rx) = async_channel::bounded(1);
    std::thread::Builder::new()
        .name("asoc-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen > 1 {
                    eprintln!("asoc: second signal, exiting without waiting");
                    std::process::exit(1);
                }
                let _ = tx.try_send(signal);
            }
        })
        .map_err(|e| CliError::runtime(format!("cannot start the signal thread: {e}")))?;
    Ok(rx)
}
