//! `asoc listen --control PATH`: a Unix socket through which `asoc
//! rotate-key` starts a key rotation on the running node, and the rewrite of
//! `--api-key-file` when the node switches keys.
//!
//! The socket is created under a temporary name, given mode 0600, and only
//! then renamed to PATH: no one but the node's user (and root) can connect
//! to it at any moment. One request per connection, one JSON line each way;
//! the key travels as hex over this local socket and is never printed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use asoc_async::{Net, Node};
use asoc_proto::auth::ApiKey;
use asoc_proto::node::NodeEvent;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::error::{CliError, CliResult};
use crate::output::Out;

use super::replace::replace_private;

/// The longest request line read from the control socket.
const MAX_REQUEST: u64 = 16 * 1024;
/// How long a control client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The bound control socket; the path is removed when this is dropped.
pub(crate) struct Control {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl Control {
    /// Binds `path` with mode 0600. A socket left at `path` by an earlier
    /// run is replaced; any other file there is an error.
    pub(crate) fn bind(path: &Path) -> CliResult<Self> {
        let shown = path.display();
        match std::fs::symlink_metadata(path) {
            Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
                std::fs::remove_file(path).map_err(|e| {
                    CliError::usage(format!(
                        "--control {shown}: cannot replace the old socket: {e}"
                    ))
                })?;
            }
            Ok(_) => {
                return Err(CliError::usage(format!(
                    "--control {shown}: exists and is not a socket"
                )))
            }
            Err(_) => {}
        }
        let file_name = path
            .file_name()
            .ok_or_else(|| CliError::usage(format!("--control {shown}: not a file path")))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp)
            .map_err(|e| CliError::usage(format!("--control {shown}: cannot bind: {e}")))?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(CliError::usage(format!("--control {shown}: {e}")));
        }
        Ok(Self {
            path: path.to_path_buf(),
            listener: Some(listener),
        })
    }

    /// Serves requests for `node` on a thread of its own (a few requests
    /// in a node's life, whatever its runtime), until the process ends.
    pub(crate) fn serve<N: Net>(&mut self, node: Node<N>, out: Out) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let path = self.path.display().to_string();
        out.emit(json!({"event": "control_listening", "path": path}), || {
            format!("control socket at {path}")
        });
        let spawned = std::thread::Builder::new()
            .name("asoc-control".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    match stream {
                        Ok(stream) => answer(&node, out, stream),
                        Err(e) => crate::output::warn(format_args!(
                            "asoc: control socket: accept failed: {e}"
                        )),
                    }
                }
            });
        if let Err(e) = spawned {
            crate::output::warn(format_args!("asoc: cannot start the control socket: {e}"));
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one request from `stream`, carries it out, writes the answer.
fn answer<N: Net>(node: &Node<N>, out: Out, stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let mut line = Zeroizing::new(String::new());
    let reply = match BufReader::new((&stream).take_limit()).read_line(&mut line) {
        Ok(0) => return,
        Ok(_) => handle(node, out, &line),
        Err(e) => json!({"ok": false, "error": format!("cannot read the request: {e}")}),
    };
    let mut stream = stream;
    let _ = writeln!(stream, "{reply}");
}

/// `read` limited to [`MAX_REQUEST`] bytes.
trait TakeLimit: Sized + std::io::Read {
    fn take_limit(self) -> std::io::Take<Self> {
        self.take(MAX_REQUEST)
    }
}
impl<R: std::io::Read> TakeLimit for R {}

fn handle<N: Net>(node: &Node<N>, out: Out, line: &str) -> Value {
    let request: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return json!({"ok": false, "error": format!("not a JSON request: {e}")}),
    };
    if request["cmd"] != "rotate_key" {
        return json!({"ok": false, "error": "unknown command (this socket serves rotate_key)"});
    }
    let key = request["key_hex"]
        .as_str()
        .and_then(hex_decode)
        .and_then(|bytes| ApiKey::from_bytes(&bytes).ok());
    let (Some(key), Some(activate_in), Some(grace)) = (
        key,
        request["activate_in_ms"].as_u64(),
        request["grace_ms"].as_u64(),
    ) else {
        return json!({"ok": false,
                      "error": "rotate_key needs key_hex (16 bytes or more), activate_in_ms and grace_ms"});
    };
    match node.start_key_rotation(
        key,
        Duration::from_millis(activate_in),
        Duration::from_millis(grace),
    ) {
        Ok(epoch) => {
            out.emit(
                json!({"event": "rotation_requested", "epoch": epoch,
                       "activate_in_ms": activate_in, "grace_ms": grace}),
                || format!("key rotation {epoch} requested through the control socket"),
            );
            json!({"ok": true, "epoch": epoch})
        }
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    }
}

fn hex_decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() / 2));
    for pair in text.chunks_exact(2) {
        let (hi, lo) = (pair.first().copied()?, pair.get(1).copied()?);
        out.push(nibble(hi)? << 4 | nibble(lo)?);
    }
    Some(out)
}

/// `--api-key-file`, rewritten when the node switches keys so that a
/// restart keeps the new one.
#[derive(Clone, Debug)]
pub(crate) struct KeyFile(pub(crate) Option<PathBuf>);

impl KeyFile {
    /// Acts on `event`: on a switch of the signing key, rewrites the file.
    pub(crate) fn on_event<N: Net>(&self, node: &Node<N>, out: Out, event: &NodeEvent) {
        let (Some(path), NodeEvent::KeyRotationActivated { epoch, .. }) = (&self.0, event) else {
            return;
        };
        let key = node.signing_key();
        let shown = path.display().to_string();
        match replace_private(path, &[key.expose_secret(), b"\n"]) {
            Ok(()) => out.emit(
                json!({"event": "rotation_key_file_rewritten", "epoch": epoch, "path": shown}),
                || format!("key rotation {epoch}: the new key is in {shown}"),
            ),
            Err(e) => out.emit(
                json!({"event": "rotation_key_file_failed", "epoch": epoch, "path": shown,
                       "error": e.to_string()}),
                || format!("key rotation {epoch}: cannot rewrite {shown}: {e}"),
            ),
        }
    }
}
