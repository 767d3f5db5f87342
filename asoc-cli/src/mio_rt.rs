//! What the blocking bodies of the commands share on `--runtime mio`:
//! asoc-mio's node and connection block the calling thread, so concurrent
//! work (event printing, one handler per incoming stream) runs on threads
//! of its own, tracked so that shutdown can wait for them with a deadline.

use std::sync::mpsc;
use std::time::Instant;

/// Threads that must finish before a command ends: each holds a
/// [`Token`]; [`wait`](Alive::wait) returns once every token is dropped.
pub(crate) struct Alive {
    token: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
}

/// Held by a tracked thread while it works.
#[derive(Clone)]
pub(crate) struct Token {
    _held: mpsc::Sender<()>,
}

impl Alive {
    pub(crate) fn new() -> Self {
        let (token, done) = mpsc::channel();
        Self { token, done }
    }

    /// A token for one more thread.
    pub(crate) fn token(&self) -> Token {
        Token {
            _held: self.token.clone(),
        }
    }

    /// Waits until every token is dropped or `deadline` passes.
    pub(crate) fn wait(self, deadline: Instant) {
        let Self { token, done } = self;
        drop(token);
        // Nothing is ever sent: this returns when the last token is
        // dropped (disconnected) or at the deadline.
        let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// Runs `work` on a named thread holding `token`.
pub(crate) fn spawn(
    name: &str,
    token: Token,
    work: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            work();
            drop(token);
        })
        .map(drop)
}
