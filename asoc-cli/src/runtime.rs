//! `--runtime`: which adapter runs a command. Every command that opens
//! sockets is a [`Job`] written once over [`asoc_async::Net`]; adding a
//! runtime is one arm in [`run`].

use std::future::Future;
use std::time::Duration;

use asoc_async::{DriverConfig, Net};

use crate::error::{CliError, CliResult};

/// The async runtimes the command can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RuntimeKind {
    /// tokio's multi-threaded runtime (asoc-tokio).
    Tokio,
    /// A smol executor run by one thread per core (asoc-smol).
    Smol,
    /// async-std's executor over the smol reactor (asoc-smol).
    AsyncStd,
    /// asoc-mio's own mio loop, on a thread of its own (asoc-mio).
    Mio,
}

impl RuntimeKind {
    /// The name as given on the command line and printed in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Tokio => "tokio",
            Self::Smol => "smol",
            Self::AsyncStd => "async-std",
            Self::Mio => "mio",
        }
    }
}

/// A command body that runs on any runtime's sockets.
pub(crate) trait Job {
    /// What the command returns.
    type Output;
    /// Runs the command with `net`, inside the runtime.
    fn run<N: Net>(self, net: N) -> impl Future<Output = CliResult<Self::Output>>;

    /// How long a closed connection may wait for its transport's buffered
    /// output (TLS records) on the mio loop: the send-stall timeout of the
    /// command's connections, as asoc-mio's own node and connection use.
    fn linger(&self) -> Duration {
        DriverConfig::default().connection().send_stall_timeout()
    }

    /// Whether the job measures two ends against each other and wants a
    /// second runtime for the far end ([`run_two_sided`](Self::run_two_sided)).
    fn two_sided(&self) -> bool {
        false
    }

    /// Runs the command with `net` for the near end and `far` for the far
    /// one. On mio, when [`two_sided`](Self::two_sided) says so, `far` is a
    /// loop thread of its own, as the two nodes of two `asoc_mio::Node`s
    /// are; elsewhere it is the same runtime.
    fn run_two_sided<N: Net>(self, net: N, far: N) -> impl Future<Output = CliResult<Self::Output>>
    where
        Self: Sized,
    {
        drop(far);
        self.run(net)
    }
}

/// Runs `job` on a mio loop: the loop thread owns the sockets and runs the
/// tasks, and the command itself waits on this thread, as a caller of
/// asoc-mio's blocking node does. The loop ends once its last task does.
fn on_mio<J: Job>(job: J) -> CliResult<J::Output> {
    let start = |name| {
        asoc_mio::Mio::new(name, job.linger())
            .map_err(|e| CliError::runtime(format!("cannot start mio: {e}")))
    };
    let net = start("asoc-mio")?;
    let far = if job.two_sided() {
        start("asoc-mio-far")?
    } else {
        net.clone()
    };
    futures_lite::future::block_on(job.run_two_sided(net, far))
}

/// Starts `kind` and runs `job` to completion on it.
pub(crate) fn run<J: Job>(kind: RuntimeKind, job: J) -> CliResult<J::Output> {
    match kind {
        RuntimeKind::Tokio => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::runtime(format!("cannot start tokio: {e}")))?;
            let net = asoc_tokio::Tokio::from_handle(rt.handle().clone());
            let out = rt.block_on(job.run_two_sided(net.clone(), net));
            // Connection tasks may still be closing sockets; don't wait.
            rt.shutdown_background();
            out
        }
        RuntimeKind::Smol => {
            // smol's global executor runs tasks on one thread unless
            // SMOL_THREADS says otherwise, where tokio's runtime has one per
            // core; this one has one per core too (this thread included).
            let executor = std::sync::Arc::new(smol::Executor::new());
            let (_stop, stopped) = async_channel::bounded::<()>(1);
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            for i in 1..cores {
                let (executor, stopped) = (executor.clone(), stopped.clone());
                std::thread::Builder::new()
                    .name(format!("smol-{i}"))
                    .spawn(move || smol::block_on(executor.run(stopped.recv())))
                    .map_err(|e| CliError::runtime(format!("cannot start smol: {e}")))?;
            }
            let net = asoc_smol::Smol::from_executor(executor.clone());
            smol::block_on(executor.run(job.run_two_sided(net.clone(), net)))
        }
        RuntimeKind::AsyncStd => {
            let net = asoc_smol::Smol::with_spawner(|task| {
                async_std::task::spawn(task);
            });
            async_std::task::block_on(job.run_two_sided(net.clone(), net))
        }
        RuntimeKind::Mio => on_mio(job),
    }
}

/// Runs `fut` as a task of `net`; the returned future gives its output
/// (`None` if the task was dropped, e.g. at runtime shutdown).
pub(crate) fn spawn<N: Net, T: Send + 'static>(
    net: &N,
    fut: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = Option<T>> {
    let (tx, rx) = async_channel::bounded(1);
    net.spawn(Box::pin(async move {
        let _ = tx.send(fut.await).await;
    }));
    async move { rx.recv().await.ok() }
}

/// `fut`, or `None` once `deadline` passes.
pub(crate) async fn until<N: Net, T>(
    net: &N,
    deadline: std::time::Instant,
    fut: impl Future<Output = T>,
) -> Option<T> {
    asoc_async::race(fut, net.sleep_until(deadline)).await
}
