//! `asoc listen`'s operations side: peers from the cluster
//! (`--peers-from`), the audit log (`--audit-log`) and the metrics
//! endpoint (`--metrics`), checked before any socket opens and started
//! with the node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use asoc_async::{Net, Node};
use asoc_proto::node::NodeEvent;

use crate::audit::Audit;
use crate::cli::OpsArgs;
use crate::error::{CliError, CliResult};
use crate::metrics::{self, EventCounts};
use crate::net_errors::check_target;
use crate::output::Out;
use crate::peers_from::{self, DnsWatch, PeersFrom, SystemResolver};
use crate::signals;

/// The checked operations options.
pub(super) struct Ops {
    /// `--peers-from dns:NAME:PORT`: resolved once the node runs.
    dns: Option<(String, u16)>,
    refresh: Duration,
    audit: Option<(PathBuf, usize)>,
    metrics: Option<SocketAddr>,
}

/// What runs beside the node until the listener ends.
pub(super) struct Running {
    _dns: Option<DnsWatch>,
    /// The metrics endpoint's bound address.
    pub(super) metrics: Option<SocketAddr>,
    observer: Observer,
}

/// Sees every node event the listener prints.
#[derive(Clone, Default)]
pub(super) struct Observer {
    audit: Option<Audit>,
    counts: Option<Arc<EventCounts>>,
}

impl Observer {
    pub(super) fn event(&self, e: &NodeEvent) {
        if let Some(audit) = &self.audit {
            audit.event(e);
        }
        if let Some(counts) = &self.counts {
            counts.event(e);
        }
    }
}

impl Running {
    pub(super) fn observer(&self) -> Observer {
        self.observer.clone()
    }

    /// At shutdown: the audit lines still queued are written.
    pub(super) fn finish(&self) {
        if let Some(audit) = &self.observer.audit {
            audit.flush(Duration::from_secs(2));
        }
    }
}

impl Ops {
    /// Checks the options; returns the static peers a `slurm` source names.
    pub(super) fn prepare(args: &OpsArgs, bind: SocketAddr) -> CliResult<(Self, Vec<String>)> {
        if args.peers_refresh.is_zero() {
            return Err(CliError::usage("--peers-refresh must be more than 0s"));
        }
        let mut peers = Vec::new();
        let mut dns = None;
        match &args.peers_from {
            None => {}
            Some(PeersFrom::Slurm { port }) => {
                let port = match (port, bind.port()) {
                    (Some(p), _) => *p,
                    (None, 0) => {
                        return Err(CliError::usage(
                            "--peers-from slurm dials the job's nodes at this node's port, \
                             and --bind has port 0: give it as --peers-from slurm:PORT",
                        ))
                    }
                    (None, p) => p,
                };
                let hosts = peers_from::slurm_hosts()?;
                peers = peers_from::slurm_peers(&hosts, port);
                for peer in &peers {
                    check_target(peer, "--peers-from slurm")?;
                }
            }
            Some(PeersFrom::Dns { name, port }) => dns = Some((name.clone(), *port)),
        }
        Ok((
            Self {
                dns,
                refresh: args.peers_refresh,
                audit: args.audit_log.clone().map(|p| (p, args.audit_queue)),
                metrics: args.metrics,
            },
            peers,
        ))
    }

    /// Starts the audit log and the metrics endpoint, before the node's
    /// first event is read.
    pub(super) fn start<N: Net>(&self, node: &Node<N>) -> CliResult<Running> {
        let audit = match &self.audit {
            Some((path, capacity)) => {
                let reopen = Arc::new(AtomicBool::new(false));
                signals::hangup(reopen.clone())?;
                // The writer thread ends when the last handle drops, with
                // the process.
                let (audit, _writer) = Audit::open(path, *capacity, node.node_id(), reopen)?;
                Some(audit)
            }
            None => None,
        };
        let counts = Arc::new(EventCounts::default());
        let metrics = match self.metrics {
            Some(addr) => {
                Some(metrics::serve(addr, node.clone(), counts.clone(), audit.clone())?.addr)
            }
            None => None,
        };
        Ok(Running {
            _dns: None,
            metrics,
            observer: Observer {
                audit,
                counts: self.metrics.is_some().then_some(counts),
            },
        })
    }

    /// Starts resolving `--peers-from dns:…`, after the listening line.
    pub(super) fn start_peers<N: Net>(
        &self,
        running: &mut Running,
        node: &Node<N>,
        out: Out,
    ) -> CliResult {
        if let Some((name, port)) = &self.dns {
            running._dns = Some(peers_from::watch_dns(
                node.clone(),
                name.clone(),
                *port,
                self.refresh,
                SystemResolver,
                out,
            )?);
        }
        Ok(())
    }
}
