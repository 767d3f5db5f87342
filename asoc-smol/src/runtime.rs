//! Spawning and timers: smol's executor, any `async-executor`, or any
//! spawn function (async-std), with `async-io`'s timer.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use asoc_async::{BoxFuture, Runtime};
use async_executor::Executor;

type SpawnFn = dyn Fn(BoxFuture<()>) + Send + Sync;

/// The executor a connection's task runs on; timers come from `async-io`,
/// whose reactor serves every executor of the smol family.
#[derive(Clone)]
pub struct Smol {
    spawn: Arc<SpawnFn>,
}

impl Smol {
    /// smol's global executor (`smol::spawn`).
    #[must_use]
    pub fn global() -> Self {
        Self::with_spawner(|task| smol::spawn(task).detach())
    }

    /// An executor of your own. Something must run it (`executor.run(..)`)
    /// for connections to make progress.
    #[must_use]
    pub fn from_executor(executor: Arc<Executor<'static>>) -> Self {
        Self::with_spawner(move |task| executor.spawn(task).detach())
    }

    /// Any spawn function that runs the task to completion in the
    /// background, e.g. `|task| { async_std::task::spawn(task); }`.
    #[must_use]
    pub fn with_spawner<F>(spawn: F) -> Self
    where
        F: Fn(BoxFuture<()>) + Send + Sync + 'static,
    {
        Self {
            spawn: Arc::new(spawn),
        }
    }
}

impl fmt::Debug for Smol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smol").finish_non_exhaustive()
    }
}

impl Runtime for Smol {
    fn spawn(&self, task: BoxFuture<()>) {
        (self.spawn)(task);
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        let timer = async_io::Timer::at(deadline);
        Box::pin(async move {
            timer.await;
        })
    }
}
