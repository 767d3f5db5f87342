//! `asoc send --runtime mio`: the same transfer over asoc-mio's blocking
//! connection, [`MioConnection`].

use asoc_mio::{MioConfig, MioConnection, TlsStream};
use asoc_proto::connection::CloseReason;

use super::Send;
use crate::error::{CliError, CliResult};
use crate::net_errors::unreachable;
use crate::os;
use crate::progress::Progress;
use crate::reader::{Item, Source};

/// Connects, sends every input as a stream in order, and closes cleanly.
pub(super) fn run(mut send: Send) -> CliResult {
    let conn = connect(&send)?;
    for source in std::mem::take(&mut send.sources) {
        send_one(&send, &conn, source)?;
    }
    conn.close();
    send.closed(&conn.closed())
}

fn connect(send: &Send) -> CliResult<MioConnection> {
    let peer = &send.peer;
    // Connected here, so that an unreachable peer is told apart from a
    // failed handshake; every address the name resolves to is tried.
    let tcp = std::net::TcpStream::connect(peer.as_str()).map_err(|e| unreachable(peer, &e))?;
    let addr = tcp.peer_addr().map_err(|e| unreachable(peer, &e))?;
    let _ = tcp.set_nodelay(true);
    tcp.set_nonblocking(true).map_err(|e| send.failed(&e))?;
    let node = os::node_id().map_err(|e| CliError::runtime(format!("no OS randomness: {e}")))?;
    let auth = send.authenticator(node)?;
    let io = mio::net::TcpStream::from_std(tcp);
    let conn = match &send.tls {
        None => MioConnection::client(io, &auth, MioConfig::default()),
        Some(config) => {
            let name =
                asoc_mio::tls::server_name(peer).map_err(|e| CliError::usage(e.to_string()))?;
            let io = TlsStream::client(io, config.clone(), name)
                .map_err(|e| CliError::auth(format!("TLS handshake with {peer} failed: {e}")))?;
            MioConnection::client(io, &auth, MioConfig::default())
        }
    };
    let conn = conn.map_err(|e| match e {
        // The TLS handshake runs inside the connection's first reads and
        // writes, so its failure ends the connection as a transport error
        // (or the server's close) before any ASoc byte was answered.
        asoc_mio::Error::Handshake(CloseReason::Transport | CloseReason::PeerClosed)
            if send.tls.is_some() =>
        {
            CliError::auth(format!(
                "TLS handshake with {peer} failed: its certificate does not verify against \
                 --tls-ca / --tls-pin, it requires a client certificate, or it does not speak TLS"
            ))
        }
        asoc_mio::Error::Handshake(reason) => send.refused(&reason),
        other => send.failed(&other),
    })?;
    send.connected(addr, node);
    Ok(conn)
}

fn send_one(send: &Send, conn: &MioConnection, source: Source) -> CliResult {
    let name = source.name.clone();
    let lost =
        |e: asoc_mio::Error| CliError::runtime(format!("connection to {} lost: {e}", send.peer));
    let id = conn.open_stream().map_err(lost)?;
    let bar = Progress::new(&name, source.len);
    let chunks = source.chunks(send.chunk_size);
    let (mut bytes, mut frames) = (0u64, 0u64);
    let digest = loop {
        match chunks.recv_blocking() {
            Ok(Item::Chunk(chunk)) => {
                let n = chunk.len() as u64;
                conn.send(id, chunk).map_err(lost)?;
                bytes += n;
                frames += 1;
                bar.advance(n);
            }
            Ok(Item::End(digest)) => break digest,
            Ok(Item::Failed(e)) => {
                bar.finish();
                return Err(CliError::runtime(format!("cannot read {name}: {e}")));
            }
            Err(_) => return Err(CliError::runtime(format!("reading {name} stopped"))),
        }
    };
    conn.finish(id).map_err(lost)?;
    bar.finish();
    send.sent(&name, id, (bytes, frames), &digest);
    Ok(())
}
