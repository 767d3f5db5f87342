//! Signals as async messages, on any runtime: a thread waits for each and
//! sends it on a channel. SIGINT and SIGTERM stop the command (a second one
//! exits at once); SIGUSR1 asks `asoc listen` for its discovery counters.

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
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
                    crate::output::warn(format_args!(
                        "asoc: second signal, exiting without waiting"
                    ));
                    std::process::exit(1);
                }
                let _ = tx.try_send(signal);
            }
        })
        .map_err(|e| CliError::runtime(format!("cannot start the signal thread: {e}")))?;
    Ok(rx)
}

/// SIGUSR1 as an async message: the receiver gets one `()` per signal
/// (signals arriving while one is unread are merged into it).
pub(crate) fn user1() -> CliResult<async_channel::Receiver<()>> {
    let mut signals = Signals::new([SIGUSR1])
        .map_err(|e| CliError::runtime(format!("cannot install the SIGUSR1 handler: {e}")))?;
    let (tx, rx) = async_channel::bounded(1);
    std::thread::Builder::new()
        .name("asoc-sigusr1".into())
        .spawn(move || {
            for _ in signals.forever() {
                let _ = tx.try_send(());
            }
        })
        .map_err(|e| CliError::runtime(format!("cannot start the SIGUSR1 thread: {e}")))?;
    Ok(rx)
}

/// SIGHUP sets `flag` (the audit log reopens its file, for logrotate).
/// Installed only when something reopens: otherwise SIGHUP keeps ending
/// the process.
pub(crate) fn hangup(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> CliResult<()> {
    signal_hook::flag::register(signal_hook::consts::SIGHUP, flag)
        .map(|_| ())
        .map_err(|e| CliError::runtime(format!("cannot install the SIGHUP handler: {e}")))
}
