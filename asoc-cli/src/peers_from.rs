//! `asoc listen --peers-from`: static peers taken from the cluster instead
//! of the command line. `slurm` reads the job's node list once (the
//! allocation does not change under a job step); `dns:NAME:PORT` resolves
//! NAME again every `--peers-refresh`, adding the new addresses as static
//! peers and dropping the vanished ones, so that a Kubernetes headless
//! service, whose records follow its pods, can be used as the peer list.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use asoc_async::{Net, Node};
use serde_json::json;

use crate::error::{CliError, CliResult};
use crate::output::Out;

/// Where the peers come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeersFrom {
    /// The SLURM job's nodes, each at `port` (default: this node's port).
    Slurm { port: Option<u16> },
    /// Every A and AAAA record of `name`, at `port`.
    Dns { name: String, port: u16 },
}

impl FromStr for PeersFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad_port = |p: &str| format!("bad port {p:?} in {s:?}: expected 1-65535");
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad_port(p))
        };
        if s == "slurm" {
            return Ok(Self::Slurm { port: None });
        }
        if let Some(p) = s.strip_prefix("slurm:") {
            return Ok(Self::Slurm {
                port: Some(port(p)?),
            });
        }
        if let Some(rest) = s.strip_prefix("dns:") {
            let (name, p) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?}: expected dns:NAME:PORT"))?;
            if name.is_empty() || name.contains(':') {
                return Err(format!("{s:?}: expected dns:NAME:PORT with a host name"));
            }
            return Ok(Self::Dns {
                name: name.to_string(),
                port: port(p)?,
            });
        }
        Err(format!(
            "{s:?}: expected slurm, slurm:PORT or dns:NAME:PORT"
        ))
    }
}

impl fmt::Display for PeersFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Slurm { port: None } => f.write_str("slurm"),
            Self::Slurm { port: Some(p) } => write!(f, "slurm:{p}"),
            Self::Dns { name, port } => write!(f, "dns:{name}:{port}"),
        }
    }
}

/// A hostlist that cannot be expanded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum HostlistError {
    /// A `[` without its `]`, or a `]` without its `[`.
    #[error("unbalanced brackets in {0:?}")]
    Unbalanced(String),
    /// A range that is not `N` or `N-M` with `N <= M`.
    #[error("bad range {0:?}: expected N or N-M with N <= M")]
    BadRange(String),
    /// More hosts than a job can have.
    #[error("the hostlist names more than {MAX_HOSTS} hosts")]
    TooMany,
}

/// Bound on an expanded hostlist: a typo such as `n[0-99999999]` must fail,
/// not allocate for ever.
pub(crate) const MAX_HOSTS: usize = 65_536;

/// Expands a SLURM hostlist (`node[01-04,07]`, `rack[1-2]-n[1-3]`,
/// `a1,b[2-3],c`) into host names, in order. A range keeps the width of
/// its lower bound when that has a leading zero (`[08-10]` gives `08 09
/// 10`), as SLURM does.
pub(crate) fn expand_hostlist(list: &str) -> Result<Vec<String>, HostlistError> {
    let mut hosts = Vec::new();
    for item in split_top_level(list)? {
        if item.is_empty() {
            continue;
        }
        let mut names = vec![String::new()];
        let mut rest = item;
        while !rest.is_empty() {
            let (prefix, group, after) = match rest.find('[') {
                None => (rest, None, ""),
                Some(open) => {
                    let close = rest[open..]
                        .find(']')
                        .map(|c| open + c)
                        .ok_or_else(|| HostlistError::Unbalanced(item.to_string()))?;
                    (
                        &rest[..open],
                        Some(&rest[open + 1..close]),
                        &rest[close + 1..],
                    )
                }
            };
            if prefix.contains(']') {
                return Err(HostlistError::Unbalanced(item.to_string()));
            }
            for n in &mut names {
                n.push_str(prefix);
            }
            if let Some(group) = group {
                let suffixes = expand_group(group)?;
                if names.len().saturating_mul(suffixes.len()) > MAX_HOSTS {
                    return Err(HostlistError::TooMany);
                }
                names = names
                    .iter()
                    .flat_map(|n| suffixes.iter().map(move |s| format!("{n}{s}")))
                    .collect();
            }
            rest = after;
        }
        if hosts.len() + names.len() > MAX_HOSTS {
            return Err(HostlistError::TooMany);
        }
        hosts.extend(names);
    }
    Ok(hosts)
}

/// Splits at the commas outside brackets.
fn split_top_level(list: &str) -> Result<Vec<&str>, HostlistError> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0u32, 0);
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err(HostlistError::Unbalanced(list.to_string())),
            ']' if depth == 1 => depth = 0,
            ']' => return Err(HostlistError::Unbalanced(list.to_string())),
            ',' if depth == 0 => {
                items.push(list[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(HostlistError::Unbalanced(list.to_string()));
    }
    items.push(list[start..].trim());
    Ok(items)
}

/// `01-04,07` into `01 02 03 04 07`.
fn expand_group(group: &str) -> Result<Vec<String>, HostlistError> {
    let mut out = Vec::new();
    for range in group.split(',') {
        let bad = || HostlistError::BadRange(range.to_string());
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(bad());
        }
        let (a, b) = (
            lo.parse::<u64>().map_err(|_| bad())?,
            hi.parse::<u64>().map_err(|_| bad())?,
        );
        if a > b {
            return Err(bad());
        }
        if b - a >= MAX_HOSTS as u64 || out.len() + (b - a) as usize >= MAX_HOSTS {
            return Err(HostlistError::TooMany);
        }
        let width = if lo.len() > 1 && lo.starts_with('0') {
            lo.len()
        } else {
            0
        };
        out.extend((a..=b).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

/// The hosts of the SLURM job this process runs in: `scontrol show
/// hostnames` when scontrol is installed, else `SLURM_JOB_NODELIST`
/// expanded here.
pub(crate) fn slurm_hosts() -> CliResult<Vec<String>> {
    let list = std::env::var("SLURM_JOB_NODELIST")
        .or_else(|_| std::env::var("SLURM_NODELIST"))
        .map_err(|_| {
            CliError::usage(
                "--peers-from slurm: SLURM_JOB_NODELIST is not set (run inside a SLURM \
                 allocation, e.g. from sbatch or srun)",
            )
        })?;
    if let Ok(out) = std::process::Command::new("scontrol")
        .args(["show", "hostnames", &list])
        .stderr(std::process::Stdio::null())
        .output()
    {
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let hosts: Vec<String> = text.split_whitespace().map(str::to_string).collect();
            if !hosts.is_empty() {
                return Ok(hosts);
            }
        }
    }
    expand_hostlist(&list)
        .map_err(|e| CliError::usage(format!("--peers-from slurm: SLURM_JOB_NODELIST: {e}")))
}

/// Whether `host` names this machine (its short name is compared, so that
/// `n01` and `n01.cluster` match).
pub(crate) fn is_this_host(host: &str) -> bool {
    let short = |h: &str| h.split('.').next().unwrap_or(h).to_ascii_lowercase();
    let mut mine = vec![rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()];
    if let Ok(n) = std::env::var("SLURMD_NODENAME") {
        mine.push(n);
    }
    mine.iter().any(|m| short(m) == short(host))
}

/// The static peers of a SLURM job: every other host at `port`.
pub(crate) fn slurm_peers(hosts: &[String], port: u16) -> Vec<String> {
    hosts
        .iter()
        .filter(|h| !is_this_host(h))
        .map(|h| format!("{h}:{port}"))
        .collect()
}

/// Turns a name into addresses.
pub(crate) trait Resolver: Send + 'static {
    /// Every address of `name` at `port`.
    fn resolve(&self, name: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The system's resolver (getaddrinfo: A and AAAA records, /etc/hosts).
pub(crate) struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok((name, port).to_socket_addrs()?.collect())
    }
}

/// The static peers standing for a name's addresses, keyed by address.
#[derive(Debug)]
pub(crate) struct Tracked<P> {
    peers: BTreeMap<SocketAddr, P>,
}

/// What one resolution changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) added: Vec<SocketAddr>,
    pub(crate) removed: Vec<SocketAddr>,
}

impl<P: Copy> Tracked<P> {
    pub(crate) fn new() -> Self {
        Self {
            peers: BTreeMap::new(),
        }
    }

    /// Makes the tracked set `addrs` (minus those `skip` says are this
    /// node): `add` for each new address, `remove` for each vanished one.
    pub(crate) fn update(
        &mut self,
        addrs: &[SocketAddr],
        skip: impl Fn(SocketAddr) -> bool,
        mut add: impl FnMut(SocketAddr) -> P,
        mut remove: impl FnMut(P),
    ) -> Change {
        let wanted: std::collections::BTreeSet<SocketAddr> =
            addrs.iter().copied().filter(|a| !skip(*a)).collect();
        let mut change = Change::default();
        let gone: Vec<SocketAddr> = self
            .peers
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(p) = self.peers.remove(&addr) {
                remove(p);
                change.removed.push(addr);
            }
        }
        for addr in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.peers.entry(addr) {
                slot.insert(add(addr));
                change.added.push(addr);
            }
        }
        change
    }

    /// Addresses tracked now.
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        self.peers.keys().copied().collect()
    }
}

/// Whether `addr` is this node listening on `bind`: same port, and an
/// address of this machine (a socket can be bound to it) when the node
/// listens on every address.
pub(crate) fn is_self(addr: SocketAddr, bind: SocketAddr) -> bool {
    if addr.port() != bind.port() {
        return false;
    }
    let ip = bind.ip();
    if !ip.is_unspecified() {
        return addr.ip() == ip;
    }
    let same_family = matches!(
        (addr.ip(), ip),
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
    );
    same_family && UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).is_ok()
}

/// The thread re-resolving a `dns:` source; it ends when this is dropped.
pub(crate) struct DnsWatch {
    _stop: mpsc::Sender<()>,
}

/// Resolves `name` now and every `every`, keeping the node's static peers
/// equal to its addresses. A failed resolution keeps the peers it had (a
/// DNS outage must not drop the cluster) and is reported.
pub(crate) fn watch_dns<N: Net>(
    node: Node<N>,
    name: String,
    port: u16,
    every: Duration,
    resolver: impl Resolver,
    out: Out,
) -> CliResult<DnsWatch> {
    let (tx, rx) = mpsc::channel::<()>();
    let bind = node.local_addr();
    let source = format!("dns:{name}:{port}");
    std::thread::Builder::new()
        .name("asoc-peers-dns".into())
        .spawn(move || {
            let mut tracked = Tracked::new();
            loop {
                match resolver.resolve(&name, port) {
                    Ok(addrs) => {
                        let change = tracked.update(
                            &addrs,
                            |a| is_self(a, bind),
                            |a| node.add_static_peer(a.to_string()),
                            |p| node.remove_static_peer(p),
                        );
                        if !change.added.is_empty() || !change.removed.is_empty() {
                            report(out, &source, &change, &tracked.addrs());
                        }
                    }
                    Err(e) => out.emit(
                        json!({"event": "peers_resolve_failed", "source": source,
                               "error": e.to_string()}),
                        || format!("cannot resolve {source}: {e} (keeping the peers it had)"),
                    ),
                }
                match rx.recv_timeout(every) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
        .map_err(|e| CliError::runtime(format!("cannot start the DNS thread: {e}")))?;
    Ok(DnsWatch { _stop: tx })
}

/// `peers_resolved`: what a resolution changed, and the peers now.
fn report(out: Out, source: &str, change: &Change, now: &[SocketAddr]) {
    let text = |v: &[SocketAddr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    let (added, removed, peers) = (text(&change.added), text(&change.removed), text(now));
    out.emit(
        json!({"event": "peers_resolved", "source": source, "added": added,
               "removed": removed, "peers": peers}),
        || {
            format!(
                "{source}: peers {} (added {}, removed {})",
                peers.join(" "),
                added.len(),
                removed.len()
            )
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &str) -> Vec<String> {
        expand_hostlist(list).unwrap_or_else(|e| panic!("{list}: {e}"))
    }

    #[test]
    fn plain_names_and_comma_lists() {
        assert_eq!(hosts("tux1"), ["tux1"]);
        assert_eq!(hosts("tux1,tux2,login"), ["tux1", "tux2", "login"]);
        assert!(hosts("").is_empty());
    }

    #[test]
    fn ranges_and_singletons_in_one_bracket() {
        assert_eq!(
            hosts("node[01-04,07]"),
            ["node01", "node02", "node03", "node04", "node07"]
        );
        assert_eq!(hosts("tux[1-3]"), ["tux1", "tux2", "tux3"]);
        assert_eq!(hosts("tux[5]"), ["tux5"]);
    }

    #[test]
    fn zero_padding_keeps_the_lower_bounds_width() {
        assert_eq!(hosts("n[08-11]"), ["n08", "n09", "n10", "n11"]);
        assert_eq!(hosts("n[098-100]"), ["n098", "n099", "n100"]);
        assert_eq!(hosts("n[9-10]"), ["n9", "n10"]);
        assert_eq!(hosts("n[0-1]"), ["n0", "n1"]);
    }

    #[test]
    fn several_bracket_groups_and_suffixes() {
        assert_eq!(
            hosts("rack[1-2]-n[01-02]"),
            ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]
        );
        assert_eq!(hosts("tux[1-2]-ib"), ["tux1-ib", "tux2-ib"]);
    }

    #[test]
    fn comma_separated_lists_with_brackets() {
        assert_eq!(
            hosts("linux[0-2],gpu[10-11],login"),
            ["linux0", "linux1", "linux2", "gpu10", "gpu11", "login"]
        );
        assert_eq!(hosts("a[1,3],b[2-3]"), ["a1", "a3", "b2", "b3"]);
    }

    #[test]
    fn malformed_lists_are_refused() {
        for bad in [
            "n[1-2", "n1-2]", "n[[1]]", "n[]", "n[a-b]", "n[3-1]", "n[1-]",
        ] {
            assert!(expand_hostlist(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            expand_hostlist("n[0-99999999]"),
            Err(HostlistError::TooMany)
        );
        assert_eq!(
            expand_hostlist("a[0-999]-b[0-999]"),
            Err(HostlistError::TooMany)
        );
    }

    #[test]
    fn sources_parse() {
        assert_eq!("slurm".parse(), Ok(PeersFrom::Slurm { port: None }));
        assert_eq!(
            "slurm:9100".parse(),
            Ok(PeersFrom::Slurm { port: Some(9100) })
        );
        assert_eq!(
            "dns:asoc.default.svc:9000".parse(),
            Ok(PeersFrom::Dns {
                name: "asoc.default.svc".into(),
                port: 9000
            })
        );
        for bad in [
            "dns:name",
            "dns::9000",
            "dns:name:0",
            "dns:a:b:9000",
            "k8s",
            "slurm:x",
        ] {
            assert!(bad.parse::<PeersFrom>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn slurm_peers_leave_this_host_out() {
        let me = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let list = vec![me.clone(), "other-node-x".to_string()];
        assert_eq!(slurm_peers(&list, 9000), ["other-node-x:9000"]);
    }

    /// A resolver answering from a script, one answer per call.
    struct Fake(std::sync::Mutex<Vec<io::Result<Vec<SocketAddr>>>>);

    impl Resolver for Fake {
        fn resolve(&self, _: &str, _: u16) -> io::Result<Vec<SocketAddr>> {
            self.0.lock().unwrap().remove(0)
        }
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn resolutions_add_new_records_and_remove_vanished_ones() {
        let fake = Fake(std::sync::Mutex::new(vec![
            Ok(vec![a("10.0.0.1:9000"), a("[fd00::2]:9000")]),
            Ok(vec![a("10.0.0.1:9000"), a("10.0.0.3:9000")]),
            Err(io::Error::other("SERVFAIL")),
        ]));
        let mut tracked = Tracked::new();
        let live = std::cell::RefCell::new(BTreeMap::<u32, SocketAddr>::new());
        let mut next = 0u32;
        let mut step = |tracked: &mut Tracked<u32>| {
            let addrs = fake.resolve("svc", 9000).unwrap();
            tracked.update(
                &addrs,
                |_| false,
                |addr| {
                    next += 1;
                    live.borrow_mut().insert(next, addr);
                    next
                },
                |p| {
                    live.borrow_mut().remove(&p);
                },
            )
        };
        let first = step(&mut tracked);
        assert_eq!(first.added, [a("10.0.0.1:9000"), a("[fd00::2]:9000")]);
        assert!(first.removed.is_empty());
        let second = step(&mut tracked);
        assert_eq!(second.added, [a("10.0.0.3:9000")]);
        assert_eq!(second.removed, [a("[fd00::2]:9000")]);
        let live = live.borrow();
        let mut now: Vec<SocketAddr> = live.values().copied().collect();
        now.sort();
        assert_eq!(now, tracked.addrs());
        assert_eq!(live.len(), 2, "a record kept keeps its peer");
        assert!(
            live.contains_key(&1),
            "the unchanged record is not re-added"
        );
        assert!(fake.resolve("svc", 9000).is_err());
    }

    #[test]
    fn this_node_is_not_its_own_peer() {
        let bind = a("0.0.0.0:9000");
        assert!(is_self(a("127.0.0.1:9000"), bind));
        assert!(!is_self(a("127.0.0.1:9001"), bind));
        // 192.0.2.0/24 is documentation space: never an address here.
        assert!(!is_self(a("192.0.2.1:9000"), bind));
        assert!(is_self(a("10.1.2.3:9000"), a("10.1.2.3:9000")));
        assert!(!is_self(a("10.1.2.4:9000"), a("10.1.2.3:9000")));
        let mut t = Tracked::new();
        let c = t.update(
            &[a("127.0.0.1:9000"), a("127.0.0.2:9001")],
            |x| is_self(x, bind),
            |_| 0u8,
            |_| {},
        );
        assert_eq!(c.added, [a("127.0.0.2:9001")]);
    }
}
