//! TLS settings from the command line's PEM files (RFC-0002 §9.2).

use std::path::PathBuf;
use std::sync::Arc;

use asoc_async::tls::{client_config, server_config, ServerTrust, TlsConfig};

use crate::cli::{TlsClientArgs, TlsServerArgs};
use crate::error::{CliError, CliResult};

/// The client configuration, when --tls-ca or --tls-pin asks for TLS;
/// `identity` (certificate, key) answers servers requiring mutual TLS.
pub(crate) fn client(
    args: &TlsClientArgs,
    identity: Option<(&PathBuf, &PathBuf)>,
) -> CliResult<Option<Arc<rustls::ClientConfig>>> {
    let trust = match (&args.tls_ca, &args.tls_pin) {
        (Some(ca), _) => ServerTrust::CaFile(ca.clone()),
        (None, Some(pin)) => ServerTrust::Pinned(pin.clone()),
        (None, None) => return Ok(None),
    };
    let identity = identity.map(|(c, k)| (c.as_path(), k.as_path()));
    client_config(&trust, identity)
        .map(Some)
        .map_err(|e| CliError::usage(e.to_string()))
}

/// A node's TLS: server side from --tls-cert/--tls-key (and
/// --tls-client-ca), client side from --tls-ca/--tls-pin with the node's
/// certificate as its identity.
pub(crate) fn node(server: &TlsServerArgs, dial: &TlsClientArgs) -> CliResult<TlsConfig> {
    let mut config = TlsConfig::default();
    if let (Some(cert), Some(key)) = (&server.tls_cert, &server.tls_key) {
        config.server = Some(
            server_config(cert, key, server.tls_client_ca.as_deref())
                .map_err(|e| CliError::usage(e.to_string()))?,
        );
    }
    let identity = server.tls_cert.as_ref().zip(server.tls_key.as_ref());
    config.client = client(dial, identity)?;
    Ok(config)
}
